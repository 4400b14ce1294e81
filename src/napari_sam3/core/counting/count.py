"""Counting objects: the shipped nucleus network (default), the classical counter (both no
download, seconds) and SAM3 (text / exemplars, tiled).

    result = count_objects(image)                                   # learned, diameter estimated
    result = count_objects(image, "classical")                      # threshold + watershed
    result = count_objects(image, diameter=18, scale=(0.325, 0.325))
    result = count_objects(image, "sam3", concepts="nucleus", engine=engine)
    result = count_objects(image, "sam3", exemplars=[[x0, y0, x1, y1]], engine=engine)
    result.count, result.counts, result.labels, result.table, result.warnings

Every function has a generator twin (``iter_count``, ``iter_count_stack``) that yields
`core.progress.Progress` and returns the result, so the napari shell runs it in a worker and can cancel
between steps, tiles and planes. The count is the number of DISTINCT non-zero labels (ids may have
gaps), never ``labels.max()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_sam3.core.classical.diameter import estimate_stack_diameter
from napari_sam3.core.classical.intensity import to_intensity
from napari_sam3.core.classical.pipeline import iter_segment_classical
from napari_sam3.core.counting.sam3_tiled import filter_sam3_labels, iter_count_sam3
from napari_sam3.core.defaults import (
    COUNT_MAX_OBJECTS_PER_TILE,
    COUNT_METHODS,
    COUNT_SCORE_THRESHOLD,
    COUNT_TARGET_PX,
    DEFAULT_COUNT_METHOD,
    MASK_THRESHOLD,
    WITHOUT_SAM3,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.learned.pipeline import iter_segment_learned, stack_diameter
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end
from napari_sam3.core.results.measure import count_distinct, measure_labels
from napari_sam3.core.validation import check_diameter

__all__ = [
    "CountResult",
    "count_objects",
    "count_stack",
    "iter_count",
    "iter_count_stack",
    "stack_count_options",
]

METHODS = COUNT_METHODS
DIAMETER_WARN_RATIO = 1.5  # warn when the given diameter is this far from the measured median


@dataclass
class CountResult:
    """What a count returns.

    Attributes
    ----------
    labels : (H, W) or, for a stack, (N, H, W) int32 label image.
    table : one row per object (see `core.measure.measure_labels`); a ``slice`` column (the stack index) for stacks.
    count : number of distinct non-zero labels.
    counts : objects per concept (prompt); ``{method: n}`` for the learned and classical methods.
    method : "learned", "classical" or "sam3".
    diameter : diameter used, in pixels (given or estimated); NaN when unknown.
    warnings : messages for the user (diameter far from the measured one, no objects, ...).
    plane_counts : per-plane counts of a stack (empty for a single plane).
    plane_results : each plane's own `CountResult` of a stack (`core.counting.run.iter_run`).
    meta : method details (polarity, threshold, tiles, tile size, ...).
    """

    labels: np.ndarray
    table: pd.DataFrame
    count: int
    counts: dict[str, int]
    method: str
    diameter: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    plane_counts: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    plane_results: list = field(default_factory=list, repr=False)


# ------------------------------------------------------------------------------ public API
def count_objects(image: np.ndarray, method: str = DEFAULT_COUNT_METHOD, **kwargs) -> CountResult:
    """Count objects in one 2-D plane (gray, RGB or multichannel with ``channel``).

    Synchronous form of `iter_count`; see there for the arguments.
    """
    return run_to_end(iter_count(image, method, **kwargs))


def count_stack(stack: np.ndarray, method: str = DEFAULT_COUNT_METHOD, **kwargs) -> CountResult:
    """Count each plane of a (N, H, W) stack (or (N, H, W, 3) RGB); synchronous `iter_count_stack`."""
    return run_to_end(iter_count_stack(stack, method, **kwargs))


def iter_count(
    image: np.ndarray,
    method: str = DEFAULT_COUNT_METHOD,
    *,
    diameter: float | None = None,
    concepts: str | Sequence[str] | None = None,
    exemplars: np.ndarray | Sequence[Sequence[float]] | None = None,
    exemplar_labels: Sequence[int] | None = None,
    engine=None,
    scale: tuple[float, float] | None = None,
    channel: int | None = None,
    rgb: bool | None = None,
    polarity: str = "auto",
    intensity_threshold: str | float = "li",
    background: bool = True,
    split: bool | str = True,
    min_size: float | None = None,
    max_size: float | None = None,
    exclude_border: bool = False,
    min_score: float = COUNT_SCORE_THRESHOLD,
    mask_threshold: float = MASK_THRESHOLD,
    tile: int | str | None = "auto",
    target_px: float = COUNT_TARGET_PX,
    max_objects_per_tile: int = COUNT_MAX_OBJECTS_PER_TILE,
    diameter_source: str = "given",
    net=None,
    prompt: str | Sequence[str] | None = None,
) -> ProgressGen[CountResult]:
    """Count objects; yields `Progress`, returns a `CountResult`.

    Parameters
    ----------
    image : 2-D plane, (H, W, 3|4) RGB(A) or multichannel (pick ``channel``).
    method : "learned" (default: the shipped nucleus network, `core.learned`), "classical"
        (threshold + watershed, no network) or "sam3" (needs ``engine`` and ``concepts``/``exemplars``).
    diameter : expected object diameter in pixels; estimated when None. Sets the smoothing, the
        splitting distance and the size filter (classical) and the tile size (sam3).
    concepts : sam3: what to find, "nucleus" or "nucleus, mitotic cell" or a list (``prompt``,
        its old name, still works).
    exemplars : sam3 example boxes, pixel ``x0, y0, x1, y1`` (x = column); ``exemplar_labels`` 1
        positive (default) / 0 negative. With tiles, each tile sees the exemplars pasted beside it.
    scale : physical pixel size (sy, sx): adds ``*_physical`` columns.
    polarity, intensity_threshold, background, split : classical options (see
        `core.classical.iter_segment_classical`).
    min_size, max_size : object area limits in pixels (both methods).
    exclude_border : drop objects touching the image border (both methods).
    min_score, mask_threshold : sam3 score floor and mask binarisation.
    tile : sam3 tiling: "auto" (from the diameter), an int tile side in pixels, or None (whole image).
    target_px, max_objects_per_tile : how "auto" sizes tiles (see `core.tiling.choose_tile_size`).
    diameter_source : "given" (by the user: a plane far from it gets a warning) or "stack" (the
        stack's own estimate, `iter_count_stack`).
    net : learned: a nucleus-network file of your own (``napari-sam3 train``, the Count tab's
        "Train on these labels"); None: the shipped network.
    """
    if concepts is None:
        concepts = prompt  # the old name of the argument
    if method not in METHODS:
        raise Sam3Error(
            f"Unknown counting method {method!r}; use 'learned', 'classical' or 'sam3'."
        )
    if scale is not None:
        scale = (float(scale[-2]), float(scale[-1]))
        if not (scale[0] > 0 and scale[1] > 0):
            raise Sam3Error(f"The pixel size must be positive, got {scale}.")
    diameter = check_diameter(diameter)
    intensity = to_intensity(image, channel, rgb)  # validates: empty, NaN, shape, channels
    # what both counters without SAM3 take
    shared = {
        "polarity": polarity,
        "min_size": min_size,
        "max_size": max_size,
        "exclude_border": exclude_border,
    }
    if method == "classical":
        res = yield from iter_segment_classical(
            intensity,
            diameter,
            threshold=intensity_threshold,
            background=background,
            split=split,
            **shared,
        )
        labels = res.labels
        warnings = list(res.warnings)
        scores, prompts = None, "classical"
        used_d = res.diameter
        meta = {
            "polarity": res.polarity,
            "threshold": res.threshold,
            "work_factor": res.work_factor,
            "estimated_diameter": res.estimated_diameter,
            "work_labels": res.work_labels,
        }
    elif method == "learned":
        res = yield from iter_segment_learned(intensity, diameter, net=net, **shared)
        labels, warnings, used_d = res.labels, list(res.warnings), res.diameter
        scores, prompts = None, "learned"
        meta = {
            "polarity": res.polarity,
            "network_scale": res.factor,
            "estimated_diameter": res.estimated_diameter,
        }
        if net is not None and not hasattr(net, "forward"):
            meta["network"] = str(net)
    else:
        labels, score_arr, prompt_list, used_d, warnings, meta = yield from iter_count_sam3(
            image,
            intensity,
            diameter=diameter,
            prompt=concepts,
            exemplars=exemplars,
            exemplar_labels=exemplar_labels,
            engine=engine,
            channel=channel,
            rgb=rgb,
            min_score=min_score,
            mask_threshold=mask_threshold,
            tile=tile,
            target_px=target_px,
            max_objects_per_tile=max_objects_per_tile,
        )
        labels = filter_sam3_labels(labels, min_size, max_size, exclude_border)
        ids = np.arange(1, len(prompt_list) + 1)
        scores = {int(i): float(s) for i, s in zip(ids, score_arr, strict=True)}
        prompts = {int(i): p for i, p in zip(ids, prompt_list, strict=True)}
    yield Progress("Measuring objects", 0, None)
    work = meta.pop("work_labels", None)
    table = measure_labels(
        labels,
        intensity,
        scale=scale,
        scores=scores,
        prompts=prompts,
        work_labels=work,
        work_factor=meta.get("work_factor", 1),
    )
    count = count_distinct(labels if work is None else work)
    counts = {str(k): int(v) for k, v in table["prompt"].value_counts(sort=False).items()}
    if method in WITHOUT_SAM3:
        counts = {method: count}
    if count == 0 and not warnings:
        warnings.append("No objects were found.")
    elif diameter is not None and diameter_source == "given" and len(table):  # no rows: no median
        measured = float(np.median(table["equivalent_diameter"]))
        ratio = measured / float(diameter)
        if ratio > DIAMETER_WARN_RATIO or ratio < 1 / DIAMETER_WARN_RATIO:
            warnings.append(
                f"The given diameter ({float(diameter):.1f} px) is far from the measured median "
                f"({measured:.1f} px); try diameter={measured:.0f} or leave it empty to estimate it."
            )
    return CountResult(
        labels=labels,
        table=table,
        count=count,
        counts=counts,
        method=method,
        diameter=float(used_d) if used_d is not None else float("nan"),
        warnings=warnings,
        meta=meta,
    )


def stack_count_options(planes, method: str = DEFAULT_COUNT_METHOD, **options) -> dict:
    """``options`` for counting each plane of a stack with `iter_count`, with ONE diameter for
    the whole stack (`estimate_stack_diameter`) when the classical method has none given.

    For callers that loop over the planes themselves (the widget's All-slices count, the batch
    runner): ``planes`` needs only ``len`` and integer indexing (array, dask array, lazy list).
    The options come back unchanged for sam3, a given diameter, or a stack with nothing to measure.
    """
    if method not in WITHOUT_SAM3 or options.get("diameter") is not None:
        return dict(options)
    d = estimate_stack_diameter(
        planes,
        polarity=options.get("polarity", "auto"),
        channel=options.get("channel"),
        rgb=options.get("rgb"),
    )
    if not np.isfinite(d):
        return dict(options)
    if method == "learned":  # the network checks the estimate on the middle plane of the stack
        mid = np.asarray(planes[len(planes) // 2])
        d = stack_diameter(
            to_intensity(mid, options.get("channel"), options.get("rgb")),
            d,
            options.get("polarity", "auto"),
            net=options.get("net"),
        )
    return {**options, "diameter": d, "diameter_source": "stack"}


def iter_count_stack(
    stack: np.ndarray,
    method: str = DEFAULT_COUNT_METHOD,
    *,
    rgb: bool | None = None,
    per_plane_diameter: bool = False,
    **kwargs,
) -> ProgressGen[CountResult]:
    """Count each plane of a stack: (N, H, W), or (N, H, W, 3|4) with ``rgb``.

    The keyword arguments are those of `iter_count`; this is `core.counting.run.iter_run` (the
    one stack loop of every front end) over a `core.requests.CountRequest` of them. A z/t stack is
    one object of study: with the learned or classical method and no ``diameter``, ONE diameter
    is estimated for the whole stack and every plane is counted at it, so a dim or empty plane
    cannot invent a scale of its own; ``per_plane_diameter=True`` estimates each plane's instead.
    Yields `Progress` per plane (and the planes' own progress); returns one `CountResult` with
    (N, H, W) labels, a table with a ``slice`` column, ``plane_counts`` and the total ``count``.
    """
    from napari_sam3.core.counting.run import iter_run

    arr = stack if hasattr(stack, "ndim") and hasattr(stack, "shape") else np.asarray(stack)
    is_rgb = rgb if rgb is not None else (arr.ndim == 4 and arr.shape[-1] in (3, 4))
    if arr.ndim == 2 or (arr.ndim == 3 and is_rgb):
        arr = arr[None]
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise Sam3Error(f"A stack of planes is needed, got shape {arr.shape}.")
    facts = {k: kwargs.pop(k) for k in ("engine", "scale", "channel") if k in kwargs}
    kwargs.pop("diameter_source", None)  # the stack decides where its diameter comes from
    request = request_of(method, per_plane_diameter=per_plane_diameter, **kwargs)
    plane_rgb = is_rgb if arr.ndim == 4 else None
    return (yield from iter_run(request, arr, rgb=plane_rgb, **facts))


def request_of(method: str = DEFAULT_COUNT_METHOD, **kwargs):
    """A `CountRequest` of `iter_count`'s keyword arguments (``prompt``: the old name of
    ``concepts``)."""
    from napari_sam3.core.requests import CountRequest

    old = kwargs.pop("prompt", None)
    if kwargs.get("concepts") is None:
        kwargs["concepts"] = old
    for k in ("concepts", "exemplars", "exemplar_labels"):
        if k in kwargs and kwargs[k] is None:
            kwargs[k] = ()
    if isinstance(kwargs.get("concepts"), str):
        kwargs["concepts"] = (kwargs["concepts"],)
    return CountRequest(method=method, **kwargs)
