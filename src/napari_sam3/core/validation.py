"""Checks of user-given options, shared by the CLI, the Python API and `batch.BatchSettings`.

Qt-free. Each raises `Sam3Error` naming the allowed range, so a bad option fails once, before any
image is read, wherever it came from. Concepts are checked by `core.prompts` (the one parser).
"""

from __future__ import annotations

import math
import numbers

from napari_sam3.core.defaults import MAX_DIAMETER, MIN_DIAMETER, MIN_TILE
from napari_sam3.core.errors import Sam3Error


def check_diameter(diameter, name: str = "diameter") -> float | None:
    """None (estimate it) or a float within [MIN_DIAMETER, MAX_DIAMETER] pixels."""
    if diameter is None:
        return None
    if isinstance(diameter, bool) or not isinstance(diameter, numbers.Real):
        raise Sam3Error(
            f"The {name} is a number of pixels, got {type(diameter).__name__} {diameter!r}."
        )
    d = float(diameter)
    if not (math.isfinite(d) and MIN_DIAMETER <= d <= MAX_DIAMETER):
        raise Sam3Error(
            f"The {name} must be between {MIN_DIAMETER:g} and {MAX_DIAMETER:g} pixels, got {d:g} "
            "(objects larger than that: bin the image first)."
        )
    return d


def check_fraction(value, name: str) -> float:
    """A score or probability threshold: a number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Sam3Error(f"{name} must be a number from 0 to 1, got {value!r}.")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also false for NaN
        raise Sam3Error(f"{name} must be between 0 and 1, got {v:g}.")
    return v


def check_choice(value, choices, name: str) -> str:
    """One of ``choices`` (case-insensitive text); `Sam3Error` listing them otherwise."""
    text = value.lower() if isinstance(value, str) else value
    if text not in choices:
        raise Sam3Error(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return text


def check_tile(tile, name: str = "tile") -> int | str | None:
    """A SAM3 tiling option: None (no tiling: also "none", "off", 0), "auto" (from the object
    diameter) or a tile side of at least ``MIN_TILE`` pixels (an int or its text)."""
    if tile is None or (isinstance(tile, str) and tile.strip().lower() in ("", "none", "off", "0")):
        return None
    if isinstance(tile, str) and tile.strip().lower() == "auto":
        return "auto"
    if isinstance(tile, bool):
        raise Sam3Error(f"{name} must be 'auto', 'none' or a number of pixels, got {tile!r}.")
    try:
        side = int(tile)
    except (TypeError, ValueError):
        raise Sam3Error(
            f"{name} must be 'auto', 'none' or a number of pixels, got {tile!r}."
        ) from None
    if side == 0:
        return None
    if side < MIN_TILE:
        raise Sam3Error(f"{name} {side} is too small; use at least {MIN_TILE} pixels.")
    return side


def check_axis(value, name: str = "axis") -> int | str | None:
    """A stack axis to track along: None (the only one), an index (0 or more) into the stack's
    dimensions, or one axis letter ("T", "Z")."""
    if value is None or not str(value).strip():
        return None
    if isinstance(value, bool):
        raise Sam3Error(f"{name} must be an axis index (0, 1...) or letter (T, Z), got {value!r}.")
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0:
            raise Sam3Error(f"{name} must be 0 or more (or an axis letter such as T), got {index}.")
        return index
    if len(text) == 1 and text.isalpha():
        return text.upper()
    raise Sam3Error(f"{name} must be an axis index (0, 1...) or letter (T, Z), got {text!r}.")
