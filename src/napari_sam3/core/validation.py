"""Checks of user-given options, shared by the CLI, the Python API and `batch.BatchSettings`.

Qt-free. Each raises `Sam3Error` naming the allowed range, so a bad option fails once, before any
image is read, wherever it came from. Concepts are checked by `core.prompts` (the one parser).
"""

from __future__ import annotations

import math
import numbers

from napari_sam3.core.defaults import MAX_DIAMETER, MIN_DIAMETER
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
