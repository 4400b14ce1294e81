"""Mask refinement (Low / Medium / High) and the post-model filter chain; numpy + scipy only.

Used by the Segment tab (re-filtering without a model call) and by ``napari-sam3 segment --refine``:

- ``Low``: the raw model masks.
- ``Medium``: small holes filled and tiny specks removed.
- ``High``: edges smoothed and all holes filled.

Each object is refined on its own bounding crop (plus a small margin), so the cost follows the
objects' size, not the plane's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates, boxes_from_masks

__all__ = [
    "REFINEMENT_LEVELS",
    "REFINEMENT_TOOLTIP",
    "check_level",
    "filter_candidates",
    "refine_label_image",
    "refine_mask",
    "refine_masks",
]

REFINEMENT_LEVELS = ("Low", "Medium", "High")
REFINEMENT_TOOLTIP = (
    "Low: the raw model masks.\n"
    "Medium: small holes filled and tiny specks removed.\n"
    "High: edges smoothed and all holes filled."
)
_PAD = 4  # crop margin: room for smoothing to round an edge that touches the box


def check_level(level: str) -> str:
    """``level`` in its canonical spelling (``"low"`` -> ``"Low"``); `Sam3Error` if unknown."""
    canonical = str(level).capitalize()
    if canonical not in REFINEMENT_LEVELS:
        raise Sam3Error(
            f"Mask refinement must be one of {', '.join(REFINEMENT_LEVELS)} (got {level!r})."
        )
    return canonical


def refine_masks(cands: Candidates, level: str = "Low") -> Candidates:
    """Post-process every mask at ``level``; boxes are recomputed, scores and prompts kept.

    ``Low`` returns ``cands`` itself. Never calls a model.
    """
    level = check_level(level)
    if level == "Low" or len(cands) == 0:
        return cands
    masks = np.zeros_like(cands.masks)
    for i, mask in enumerate(cands.masks):
        masks[i] = refine_mask(mask, level)
    return Candidates(
        masks=masks,
        scores=cands.scores,
        boxes=boxes_from_masks(masks),
        prompts=cands.prompts,
        kind=cands.kind,
        iou_scores=cands.iou_scores,
        meta=dict(cands.meta),
    )


def filter_candidates(
    cands: Candidates, min_score: float | None = None, min_area: int = 0, refine: str = "Low"
) -> Candidates:
    """Score floor, then refine, then drop objects under ``min_area`` (measured after refining).

    ``min_score`` and ``refine`` carry the names of the CLI flags and the request fields."""
    refine = check_level(refine)
    out = cands.filter(threshold=min_score)
    if len(out) == 0:
        return out
    return refine_masks(out, refine).filter(min_area=min_area)


def refine_mask(mask: np.ndarray, level: str) -> np.ndarray:
    """One 2-D boolean mask refined at ``level`` (same shape; an empty mask stays empty)."""
    level = check_level(level)
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if level == "Low" or rows.size == 0:
        return mask
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(rows[0] - _PAD, 0), min(rows[-1] + _PAD + 1, mask.shape[0])
    x0, x1 = max(cols[0] - _PAD, 0), min(cols[-1] + _PAD + 1, mask.shape[1])
    result = np.zeros_like(mask)
    result[y0:y1, x0:x1] = _refine_crop(mask[y0:y1, x0:x1], level)
    return result


def refine_label_image(labels: np.ndarray, level: str) -> np.ndarray:
    """Refine each object of a 2-D label image, keeping its id (for stitched, tiled results).

    A refined object gives up the pixels it loses and takes only background pixels it gains, so
    neighbours are never overwritten.
    """
    level = check_level(level)
    labels = np.asarray(labels)
    if level == "Low" or labels.size == 0:
        return labels
    out = labels.copy()
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - _PAD, 0), min(sl[0].stop + _PAD, h)
        x0, x1 = max(sl[1].start - _PAD, 0), min(sl[1].stop + _PAD, w)
        view = out[y0:y1, x0:x1]  # a view: edits land in ``out``
        own = labels[y0:y1, x0:x1] == i
        refined = _refine_crop(own, level)
        view[own & ~refined & (view == i)] = 0
        view[refined & (view == 0)] = i
    return out


def _refine_crop(crop: np.ndarray, level: str) -> np.ndarray:
    area = int(crop.sum())
    if level == "Medium":
        out = _remove_small_components(crop, max(8, int(0.01 * area)))
        holes = ndi.binary_fill_holes(out) & ~out
        hole_lab, n = ndi.label(holes)
        if n:
            sizes = np.bincount(hole_lab.ravel())
            fill = sizes <= max(16, int(0.02 * area))
            fill[0] = False
            out = out | fill[hole_lab]
        return out
    # High
    sigma = max(1.0, min(3.0, np.sqrt(area) / 20.0))
    smooth = ndi.gaussian_filter(crop.astype(np.float32), sigma) >= 0.5
    smooth = _remove_small_components(smooth, max(8, int(0.01 * area)))
    out = ndi.binary_fill_holes(smooth)
    if not out.any():  # smoothing erased a thin object: keep the raw one, holes filled
        out = ndi.binary_fill_holes(crop)
    return out


def _remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    if not keep.any():  # never erase the object: keep its largest piece
        keep[np.argmax(sizes[1:]) + 1] = True
    return keep[lab]
