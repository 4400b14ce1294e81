"""Validation of prompts before any model call: text concepts, boxes and points.

SAM3 was trained on short English noun phrases ("nucleus", "mitotic cell"). Several concepts are
given comma-, semicolon- or newline-separated and run in one call on one image encode.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from napari_sam3.core.errors import Sam3Error

_SPLIT = re.compile(r"[,;\n\r]+")
_SPACES = re.compile(r"\s+")
MAX_CONCEPT_CHARS = 120
# Concepts in one prompt. Each is a text encode plus its own detection pass over the image
# (about 8.5 MB each on the tiny test model: 200 concepts took 1.7 GB), and the engine's text
# cache holds 256; a facility's prompt names a handful of things, so 64 leaves ample room.
MAX_CONCEPTS = 64


class NonEnglishPromptWarning(UserWarning):
    """A concept holds non-ASCII or non-English-looking words; SAM3 may not understand it."""


def parse_concepts(text: str | Iterable[str] | None) -> list[str]:
    """Split a prompt into concepts: comma/semicolon/newline separated, stripped, deduplicated.

    ``"nucleus, mitotic cell;nucleus"`` -> ``["nucleus", "mitotic cell"]``. A list is accepted too
    (each item may itself hold separators). Raises `Sam3Error` when nothing usable is left; warns
    (`NonEnglishPromptWarning`) on non-ASCII words but still returns them.
    """
    if text is None:
        raise Sam3Error(
            'The text prompt is empty. Type what to find, e.g. "nucleus" or "cell, nucleus".'
        )
    pieces = _pieces(text)
    concepts: list[str] = []
    seen: set[str] = set()
    for piece in pieces:
        for part in _SPLIT.split(piece):
            concept = _SPACES.sub(" ", part).strip().strip("\"'`").strip()
            if not concept:
                continue
            key = concept.casefold()
            if key in seen:
                continue
            seen.add(key)
            concepts.append(concept)
    if not concepts:
        raise Sam3Error(
            'The text prompt is empty. Type what to find, e.g. "nucleus" or "cell, nucleus" '
            "(several concepts separated by commas)."
        )
    bad = [c for c in concepts if not any(ch.isalpha() for ch in c)]
    if bad:
        raise Sam3Error(
            f"The prompt {', '.join(repr(b) for b in bad)} has no letters. SAM3 needs words, "
            'e.g. "nucleus" or "round cell".'
        )
    if len(concepts) > MAX_CONCEPTS:
        raise Sam3Error(
            f"The prompt holds {len(concepts)} concepts; at most {MAX_CONCEPTS} run together "
            "(each one is a detection pass and memory). Split them over several runs."
        )
    too_long = [c for c in concepts if len(c) > MAX_CONCEPT_CHARS]
    if too_long:
        raise Sam3Error(
            f"The concept {too_long[0][:40]!r}... is {len(too_long[0])} characters long; SAM3 reads "
            "short noun phrases (a few words). Separate concepts with commas."
        )
    foreign = [c for c in concepts if not c.isascii()]
    if foreign:
        warnings.warn(
            f"SAM3 was trained on English noun phrases; {', '.join(repr(f) for f in foreign)} "
            "contains non-English characters and may find nothing. Try the English word.",
            NonEnglishPromptWarning,
            stacklevel=2,
        )
    return concepts


def _pieces(text) -> list[str]:
    """The prompt as a list of strings; `Sam3Error` for anything but text (``segment_text(img, 5)``)."""
    if isinstance(text, str):
        return [text]
    try:
        items = [t for t in text if t is not None]
    except TypeError:
        items = [text]
    bad = [t for t in items if not isinstance(t, str)]
    if bad:
        raise Sam3Error(
            f'A prompt is text (a concept such as "nucleus", or a list of them); got '
            f"{type(bad[0]).__name__} {bad[0]!r}."
        )
    return items


def concepts_typed(text: str | Sequence[str] | None) -> list[str]:
    """What a user typed where concepts go: ``[]`` when blank (boxes or clicks may carry the run),
    else `parse_concepts` (the same splitting, deduplication and checks everywhere)."""
    if text is None:
        return []
    if not _SPLIT.sub("", "".join(_pieces(text))).strip():
        return []
    return parse_concepts(text)


def check_boxes(
    boxes_xyxy: Sequence | np.ndarray,
    labels: Sequence | np.ndarray | None,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Validate pixel ``x0, y0, x1, y1`` boxes (and labels 1/0) against a plane of ``shape`` (H, W).

    Coordinates are clipped to the plane; corners are reordered; empty or outside boxes raise.
    """
    arr = np.asarray(boxes_xyxy, dtype=np.float64)
    if arr.size == 0:
        raise Sam3Error("No box was given; draw at least one box around an example object.")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise Sam3Error(f"Boxes must be x0, y0, x1, y1 rows; got an array of shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise Sam3Error("A box has NaN or infinite coordinates.")
    h, w = shape
    x0 = np.clip(np.minimum(arr[:, 0], arr[:, 2]), 0, w)
    x1 = np.clip(np.maximum(arr[:, 0], arr[:, 2]), 0, w)
    y0 = np.clip(np.minimum(arr[:, 1], arr[:, 3]), 0, h)
    y1 = np.clip(np.maximum(arr[:, 1], arr[:, 3]), 0, h)
    out = np.stack([x0, y0, x1, y1], axis=1)
    empty = (x1 - x0 <= 0) | (y1 - y0 <= 0)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise Sam3Error(
            f"Box {i} ({', '.join(f'{v:g}' for v in arr[i])}) is empty or outside the {w}x{h} "
            "image (boxes are x0, y0, x1, y1 in pixels)."
        )
    if labels is None:
        lab = np.ones(len(out), dtype=np.int64)
    else:
        lab = np.asarray(labels).astype(np.int64).reshape(-1)
        if lab.shape[0] != len(out):
            raise Sam3Error(f"{len(out)} boxes but {lab.shape[0]} labels; give one label per box.")
        if not np.isin(lab, (0, 1)).all():
            raise Sam3Error("Box labels must be 1 (positive example) or 0 (negative example).")
    return out, lab


def check_points(
    points_xy: Sequence | np.ndarray | None,
    labels: Sequence | np.ndarray | None,
    shape: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate pixel ``x, y`` clicks and labels (1 positive, 0 negative) for a plane (H, W)."""
    if points_xy is None or np.asarray(points_xy).size == 0:
        if labels is not None and np.asarray(labels).size:
            raise Sam3Error("Point labels were given without points.")
        return None, None
    pts = np.asarray(points_xy, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise Sam3Error(f"Points must be x, y rows; got an array of shape {pts.shape}.")
    if not np.isfinite(pts).all():
        raise Sam3Error("A point has NaN or infinite coordinates.")
    h, w = shape
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise Sam3Error(
            f"Point {i} (x={pts[i, 0]:g}, y={pts[i, 1]:g}) lies outside the {w}x{h} image."
        )
    if labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        lab = np.asarray(labels).astype(np.int64).reshape(-1)
        if lab.shape[0] != len(pts):
            raise Sam3Error(
                f"{len(pts)} points but {lab.shape[0]} labels; give one label per point."
            )
        if not np.isin(lab, (0, 1)).all():
            raise Sam3Error("Point labels must be 1 (object) or 0 (background).")
    return pts, lab


__all__ = [
    "MAX_CONCEPTS",
    "NonEnglishPromptWarning",
    "check_boxes",
    "check_points",
    "concepts_typed",
    "parse_concepts",
]
