"""What a user asks for, checked once: one frozen request per job, the same from every front end.

Qt-free. The CLI maps its flags to the fields (a flag is its field's name: ``--min-score`` is
``min_score``), the Count tab maps its controls, Python callers construct them directly, and batch
settings build them; each request validates itself in ``__post_init__`` (`core.validation`, the
one concept parser `core.prompts.concepts_typed`, the defaults of `core.defaults`), so bad input
raises `Sam3Error` naming the fix before any image is read, wherever it came from.

    request = CountRequest(method="classical", diameter=18)
    result = run_to_end(iter_run(request, planes))      # core.counting.run: the one stack loop
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields

from napari_sam3.core.defaults import (
    COUNT_MAX_OBJECTS_PER_TILE,
    COUNT_METHODS,
    COUNT_SCORE_THRESHOLD,
    COUNT_TARGET_PX,
    DEFAULT_COUNT_METHOD,
    MASK_THRESHOLD,
    POLARITIES,
    SCORE_THRESHOLD,
    WITHOUT_SAM3,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.prompts import concepts_typed
from napari_sam3.core.validation import (
    check_axis,
    check_choice,
    check_diameter,
    check_fraction,
    check_tile,
)

__all__ = ["CountRequest", "SegmentRequest", "TrackRequest", "parse_box", "request_fields"]

Box = tuple[float, float, float, float]


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen: normalised once, in __post_init__


def parse_box(value, name: str = "exemplar") -> Box:
    """A pixel box ``x0, y0, x1, y1`` (x = column): text ``"X0,Y0,X1,Y1"`` or 4 numbers."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    if len(parts) != 4:
        raise Sam3Error(f"{name} box {value!r} needs 4 numbers X0,Y0,X1,Y1.")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise Sam3Error(f"{name} box {value!r} needs 4 numbers X0,Y0,X1,Y1.") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise Sam3Error(f"{name} box {value!r} needs finite numbers X0,Y0,X1,Y1.")
    if x1 <= x0 or y1 <= y0:
        raise Sam3Error(f"{name} box {value!r}: X1 must exceed X0 and Y1 exceed Y0.")
    return (x0, y0, x1, y1)


def _check_size(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise Sam3Error(f"{name} is an area in pixels (0 or more), got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class CountRequest:
    """One count: which counter, at which object size, finding what.

    method : "learned" (the shipped nucleus network), "classical" (threshold + watershed) or
        "sam3" (needs ``concepts`` and/or ``exemplars`` and a loaded engine at run time).
    diameter : typical object diameter in pixels; None estimates it (ONE diameter for a stack
        of planes, unless ``per_plane_diameter``).
    concepts : sam3: what to find, "nucleus, mitotic cell" or a list (the one concept parser).
    exemplars, exemplar_labels : sam3 example boxes ``x0, y0, x1, y1`` in pixels, labels 1
        (an object like this, the default) or 0 (not like this).
    min_score, mask_threshold : sam3 score floor and mask binarisation.
    tile : sam3 tiling: "auto" (from the diameter), a tile side in pixels, or None (whole plane).
    polarity : learned / classical: "auto", "bright" or "dark" objects.
    net : learned: a nucleus-network file of your own (None: the shipped network).
    min_size, max_size, exclude_border : object filters (pixels), every method.
    intensity_threshold, background, split : classical options
        (`core.classical.iter_segment_classical`).
    target_px, max_objects_per_tile : how sam3 "auto" tiles are sized.
    """

    method: str = DEFAULT_COUNT_METHOD
    diameter: float | None = None
    concepts: tuple[str, ...] = ()
    exemplars: tuple[Box, ...] = ()
    exemplar_labels: tuple[int, ...] = ()
    min_score: float = COUNT_SCORE_THRESHOLD
    mask_threshold: float = MASK_THRESHOLD
    tile: int | str | None = "auto"
    polarity: str = "auto"
    net: object = None
    per_plane_diameter: bool = False
    min_size: float | None = None
    max_size: float | None = None
    exclude_border: bool = False
    intensity_threshold: str | float = "li"
    background: bool = True
    split: bool | str = True
    target_px: float = COUNT_TARGET_PX
    max_objects_per_tile: int = COUNT_MAX_OBJECTS_PER_TILE

    def __post_init__(self) -> None:
        method = self.method
        if method not in COUNT_METHODS:
            raise Sam3Error(
                f"Unknown counting method {method!r}; use 'learned', 'classical' or 'sam3'."
            )
        _set(self, "diameter", check_diameter(self.diameter))
        # the counters without SAM3 take no concepts (a widget's disabled concept box is ignored)
        _set(self, "concepts", tuple(concepts_typed(self.concepts)) if method == "sam3" else ())
        _check_sam3_common(self)
        _set(self, "polarity", check_choice(self.polarity, POLARITIES, "polarity"))
        _set(self, "min_size", _check_size(self.min_size, "min_size"))
        _set(self, "max_size", _check_size(self.max_size, "max_size"))
        if self.net is not None and not hasattr(self.net, "forward"):
            if method != "learned":
                raise Sam3Error(
                    f"net is a nucleus network for method 'learned', not {method!r}; "
                    "leave it out or count with method='learned'."
                )
            if not os.path.isfile(os.fspath(self.net)):
                raise Sam3Error(
                    f"The nucleus network {self.net} does not exist; give a .safetensors file "
                    "from `napari-sam3 train` (or leave it out for the shipped network)."
                )
        if method == "sam3" and not self.concepts and not self.exemplars:
            if not self._exemplars_later():
                raise Sam3Error(
                    'Counting with SAM3 needs concepts (e.g. "nucleus") or exemplar boxes.'
                )
        elif method == "sam3":
            _check_not_only_negatives(self)

    def _exemplars_later(self) -> bool:
        """True where the boxes are read at run time (the Count tab's "use boxes")."""
        return False

    @property
    def sam3(self) -> bool:
        return self.method == "sam3"

    @property
    def one_stack_diameter(self) -> bool:
        """Whether a stack is counted at ONE diameter estimated over all its planes."""
        return self.method in WITHOUT_SAM3 and self.diameter is None and not self.per_plane_diameter

    def labels(self) -> tuple[int, ...]:
        """The exemplar labels, one per box (1 where none were given)."""
        return self.exemplar_labels or (1,) * len(self.exemplars)

    def count_options(self) -> dict:
        """`core.counting.iter_count` keyword arguments of this request (per plane)."""
        sam3 = self.sam3
        return {
            "diameter": self.diameter,
            "concepts": list(self.concepts) or None if sam3 else None,
            "exemplars": [list(b) for b in self.exemplars] or None if sam3 else None,
            "exemplar_labels": list(self.labels()) or None if sam3 else None,
            "polarity": self.polarity,
            "intensity_threshold": self.intensity_threshold,
            "background": self.background,
            "split": self.split,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "exclude_border": self.exclude_border,
            "min_score": self.min_score,
            "mask_threshold": self.mask_threshold,
            "tile": self.tile,
            "target_px": self.target_px,
            "max_objects_per_tile": self.max_objects_per_tile,
            "net": self.net,
        }


def _check_sam3_common(r) -> None:
    """The SAM3 options a count and a segmentation share: boxes, labels, thresholds, tiling."""
    boxes = r.exemplars if r.exemplars is not None else ()
    if hasattr(boxes, "tolist"):  # a numpy array of boxes
        boxes = boxes.tolist()
    _set(r, "exemplars", tuple(parse_box(b) for b in boxes))
    given = r.exemplar_labels if r.exemplar_labels is not None else ()
    labels = tuple(int(v) for v in given)
    if labels and len(labels) != len(r.exemplars):
        raise Sam3Error(
            f"{len(r.exemplars)} exemplar boxes but {len(labels)} labels; give one per box."
        )
    if any(v not in (0, 1) for v in labels):
        raise Sam3Error("Exemplar labels are 1 (an object like this) or 0 (not like this).")
    _set(r, "exemplar_labels", labels)
    _set(r, "min_score", check_fraction(r.min_score, "min_score"))
    _set(r, "mask_threshold", check_fraction(r.mask_threshold, "mask_threshold"))
    _set(r, "tile", check_tile(r.tile))


def _check_not_only_negatives(r) -> None:
    if r.exemplars and not any(r.labels()) and not r.concepts:
        raise Sam3Error(
            "Negative exemplars (--negative-exemplar) only say what not to find: add a positive "
            "exemplar box "
            '(--exemplar X0,Y0,X1,Y1) or concepts (--concepts "nucleus").'
        )


@dataclass(frozen=True)
class SegmentRequest:
    """One SAM3 segmentation: every instance of the concepts / like the exemplar boxes.

    concepts : what to find, "nucleus, mitotic cell" or a list (the one concept parser).
    exemplars, exemplar_labels : example boxes ``x0, y0, x1, y1`` in pixels, used on every image;
        labels 1 (like this, the default) or 0 (not like this).
    exemplar_from : boxes drawn on a reference image (`batch.exemplar_from.ExemplarSource` s),
        encoded there once; not with ``exemplars`` nor ``tile``.
    min_score, mask_threshold : score floor and mask binarisation.
    tile : None (whole plane, the default), "auto" or a tile side in pixels (`core.counting`).
    refine : mask refinement "low" (raw masks), "medium" or "high" (`core.results.refine`).
    """

    concepts: tuple[str, ...] = ()
    exemplars: tuple[Box, ...] = ()
    exemplar_labels: tuple[int, ...] = ()
    exemplar_from: tuple = ()
    min_score: float = SCORE_THRESHOLD
    mask_threshold: float = MASK_THRESHOLD
    tile: int | str | None = None
    refine: str = "low"

    def __post_init__(self) -> None:
        from napari_sam3.core.results.refine import check_level

        _set(self, "concepts", tuple(concepts_typed(self.concepts)))
        _check_sam3_common(self)
        _set(self, "exemplar_from", tuple(self.exemplar_from or ()))
        _set(self, "refine", check_level(self.refine).lower())
        if self.exemplar_from and self.exemplars:
            raise Sam3Error(
                "exemplar_from and exemplars cannot be mixed: exemplars put the same coordinates "
                "on every image; use one of them."
            )
        if self.exemplar_from and self.tile is not None:
            raise Sam3Error("exemplar_from does not work with tiles yet; leave the tile out.")
        if not self.concepts and not self.exemplars and not self.exemplar_from:
            raise Sam3Error(
                'Segmenting needs concepts (--concepts "nucleus"), exemplar boxes '
                "(--exemplar X0,Y0,X1,Y1) and/or --exemplar-from IMAGE:X0,Y0,X1,Y1."
            )
        _check_not_only_negatives(self)

    def labels(self) -> tuple[int, ...]:
        return self.exemplar_labels or (1,) * len(self.exemplars)


@dataclass(frozen=True)
class TrackRequest:
    """One SAM3 tracking run through z/t stacks.

    concepts : what to track (required). min_score : the score an object needs to start a track
    (None keeps the checkpoint's thresholds). start : the frame to start from (forward to the end,
    then back to frame 0). axis : the stack axis to track along: None (the only one), an index
    into the stack's dimensions or an axis letter ("T", "Z").
    """

    concepts: tuple[str, ...] = ()
    min_score: float | None = SCORE_THRESHOLD
    start: int = 0
    axis: int | str | None = None

    def __post_init__(self) -> None:
        _set(self, "concepts", tuple(concepts_typed(self.concepts)))
        if not self.concepts:
            raise Sam3Error('Tracking needs concepts (--concepts "nucleus, cell").')
        if self.min_score is not None:
            _set(self, "min_score", check_fraction(self.min_score, "min_score"))
        if isinstance(self.start, bool) or not isinstance(self.start, numbers.Integral):
            raise Sam3Error(f"start is a frame index (0 or more), got {self.start!r}.")
        if self.start < 0:
            raise Sam3Error(f"start must be a frame index (0 or more), got {self.start}.")
        _set(self, "axis", check_axis(self.axis))


def request_fields(cls) -> dict:
    """``{field name: default}`` of a request class (what ``--help`` and the widget show)."""
    return {f.name: f.default for f in fields(cls)}
