"""Counting with SAM3: text prompts and/or exemplar boxes, over overlapping tiles, stitched.

With several tiles, each tile sees the exemplars pasted beside it (an exemplar strip as tall as the
tile), and only the objects found on the tile itself are kept. Called by `core.counting.iter_count`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from napari_sam3.core.classical.diameter import estimate_diameter
from napari_sam3.core.counting.tiling import (
    MODEL_SIZE,
    Tile,
    choose_tile_size,
    exemplar_strip,
    objects_from_masks,
    stitch,
    tile_grid,
)
from napari_sam3.core.defaults import MIN_TILE
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing, channel_axis
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import check_boxes, concepts_typed

__all__ = ["filter_sam3_labels", "iter_count_sam3", "split_tile"]

# SAM3 returns at most its query count (200) of objects per prompt and image: a tile whose
# detections reach this share of it may have lost objects, so it is split in four and run again.
QUERY_CAP_FRACTION = 0.8
MAX_SPLITS = 3  # levels of re-tiling below the first grid


def _concepts(prompt) -> list[str]:
    return concepts_typed(prompt)


def _crop(plane: np.ndarray, t: Tile, rgb_like: bool) -> np.ndarray:
    if plane.ndim == 2 or rgb_like:
        return plane[t.y0 : t.y1, t.x0 : t.x1]
    if channel_axis(plane) == 0:
        return plane[:, t.y0 : t.y1, t.x0 : t.x1]
    return plane[t.y0 : t.y1, t.x0 : t.x1]


def iter_count_sam3(
    image,
    intensity,
    *,
    diameter,
    prompt,
    exemplars,
    exemplar_labels,
    engine,
    channel,
    rgb,
    min_score,
    mask_threshold,
    tile,
    target_px,
    max_objects_per_tile,
):
    """Yields `Progress` per tile; returns ``(labels, scores, prompts, diameter, warnings, meta)``.

    The arguments are those of `core.counting.iter_count`; ``intensity`` is the validated plane.
    """
    concepts = _concepts(prompt)
    if engine is None:
        raise Sam3Error(
            "Counting with SAM3 needs a loaded model (Sam3Engine.load()); or use method='classical', "
            "which needs no model."
        )
    h, w = intensity.shape
    boxes = labels_ex = None
    if exemplars is not None and np.asarray(exemplars).size:
        boxes, labels_ex = check_boxes(exemplars, exemplar_labels, (h, w))
    if not concepts and boxes is None:
        raise Sam3Error('Counting with SAM3 needs a prompt (e.g. "nucleus") or exemplar boxes.')
    warnings: list[str] = []
    arr = np.asarray(image)
    rgb_like = rgb if rgb is not None else (arr.ndim == 3 and arr.shape[-1] in (3, 4))
    pre = Preprocessing(channel=channel) if channel is not None else Preprocessing()

    # Diameter: given, from the exemplars, or estimated classically (cheap, no model).
    d = diameter
    if d is None and boxes is not None:
        pos = boxes[labels_ex == 1] if (labels_ex == 1).any() else boxes
        d = float(np.median(np.sqrt((pos[:, 2] - pos[:, 0]) * (pos[:, 3] - pos[:, 1]))))
    if d is None and tile == "auto":
        yield Progress("SAM3 count: estimating the object size", 0, None)
        est = estimate_diameter(intensity)
        d = est if np.isfinite(est) else None
    model_size = int(getattr(engine, "image_size", MODEL_SIZE) or MODEL_SIZE)
    if tile is None or tile == "none":
        side = max(h, w)
    elif tile == "auto":
        side = choose_tile_size(
            d, (h, w), target_px=target_px, model_size=model_size, max_objects=max_objects_per_tile
        )
    else:
        side = int(tile)
        if side < MIN_TILE:
            raise Sam3Error(f"The tile size must be at least {MIN_TILE} pixels, got {side}.")
    overlap = int(np.ceil(1.5 * d)) if d else side // 8
    overlap = max(16, min(overlap, side // 2))
    tiles = tile_grid((h, w), side, overlap)
    single = len(tiles) == 1
    objects = []
    strip = strip_boxes = strip_labels = None
    if boxes is not None and not single:
        boxes_yx = boxes[:, [1, 0, 3, 2]]
        tile_h = tiles[0].shape[0]  # all tiles have the same size
        strip, strip_boxes, kept = exemplar_strip(
            arr if (arr.ndim == 2 or rgb_like) else _hwc(arr), boxes_yx, tile_h
        )
        if len(kept) == 0:
            raise Sam3Error(
                f"The exemplar boxes are too large for {side} px tiles; give a larger tile "
                "(tile=...) or the diameter, or draw smaller boxes."
            )
        if len(kept) < len(boxes):
            warnings.append(
                f"Only {len(kept)} of {len(boxes)} exemplars fit beside a {side} px tile."
            )
        strip_labels = labels_ex[kept]
    cap = _query_cap(engine)
    # Each tile is one plain engine call: one encode (fast path, feature cache) for all concepts.
    opts = dict(preprocessing=pre, rgb=rgb, min_score=min_score, mask_threshold=mask_threshold)
    pending = [(t, 0) for t in tiles]  # (tile, re-tiling depth)
    leaves: list[Tile] = []
    next_index, done, resplit = len(tiles), 0, 0
    while pending:
        t, depth = pending.pop(0)
        total = done + len(pending) + 1
        yield Progress(f"SAM3 count: tile {done + 1}/{total}", done, total)
        crop = _crop(arr, t, rgb_like)
        with _without_clicks(engine):
            if boxes is None:
                cands = engine.segment_text(crop, concepts, **opts)
                masks, th, tw = cands.masks, *t.shape
            elif single:
                cands = engine.segment_exemplars(
                    crop, boxes, labels_ex, text=concepts or None, **opts
                )
                masks = cands.masks
            else:
                crop_hwc = crop if (crop.ndim == 2 or rgb_like) else _hwc(crop)
                composite, comp_boxes = _with_strip(crop_hwc, strip, strip_boxes)
                xyxy = comp_boxes[:, [1, 0, 3, 2]]
                cands = engine.segment_exemplars(
                    composite, xyxy, strip_labels, text=concepts or None, **opts
                )
                th, tw = crop_hwc.shape[:2]
                keep = _inside_tile(cands.masks, tw)
                masks = cands.masks[keep][:, :th, :tw]
                cands = cands.subset(keep)
        done += 1
        tiled = tile is not None and tile != "none"  # "no tiling" stays one model input
        if tiled and boxes is None and depth < MAX_SPLITS and _near_cap(cands.prompts, cap):
            parts = split_tile(t, overlap, next_index)
            if parts:  # dense: the tile's objects are found again on four smaller tiles
                next_index += len(parts)
                resplit += 1
                pending.extend((p, depth + 1) for p in parts)
                continue
        leaves.append(t)
        objects.extend(objects_from_masks(masks, cands.scores, cands.prompts, t, (h, w)))
    yield Progress(
        f"SAM3 count: merging {len(objects)} objects from {len(leaves)} tiles",
        len(leaves),
        len(leaves),
    )
    labels, scores, prompts = stitch(objects, (h, w), leaves)
    if resplit:
        warnings.append(
            f"{resplit} dense tile(s) came near SAM3's limit of {cap} objects per tile and were "
            "split into smaller tiles."
        )
    meta = {
        "tiles": len(leaves),
        "tile_size": side,
        "overlap": overlap,
        "model_size": model_size,
        "resplit_tiles": resplit,
    }
    return labels, scores, prompts, d, warnings, meta


def _query_cap(engine) -> int:
    """Most objects SAM3 returns per prompt and image (its DETR query count; 200 for SAM3)."""
    try:
        return int(engine.model.detector_model.config.detr_decoder_config.num_queries)
    except AttributeError:
        return 200


def _near_cap(prompts, cap: int) -> bool:
    """Whether one prompt's detections on a tile reach `QUERY_CAP_FRACTION` of the cap."""
    if not len(prompts):
        return False
    _, counts = np.unique(np.asarray(prompts, dtype=object).astype(str), return_counts=True)
    return int(counts.max()) >= QUERY_CAP_FRACTION * cap


def split_tile(t: Tile, overlap: int, first_index: int) -> list[Tile]:
    """Four overlapping tiles covering ``t`` (indices from ``first_index``); [] when they would be
    smaller than `MIN_TILE`."""
    h, w = t.shape
    side = (max(h, w) + overlap + 1) // 2
    if side < MIN_TILE or side >= max(h, w):
        return []
    grid = tile_grid((h, w), side, overlap)
    return [
        Tile(t.y0 + g.y0, t.x0 + g.x0, t.y0 + g.y1, t.x0 + g.x1, first_index + i)
        for i, g in enumerate(grid)
    ]


def _without_clicks(engine):
    """Tiles are never clicked: engines that can skip their tracker neck do (~5 % per tile)."""
    skip = getattr(engine, "skipping_tracker_neck", None)
    return skip() if skip is not None else contextlib.nullcontext()


def _hwc(arr: np.ndarray) -> np.ndarray:
    """(C, H, W) multichannel -> (H, W, C) so tiles and strips concatenate along columns."""
    return np.moveaxis(arr, 0, -1) if channel_axis(arr) == 0 else arr


def _with_strip(tile_img: np.ndarray, strip: np.ndarray, strip_boxes: np.ndarray):
    """The tile with the exemplar strip (as tall as the tile) pasted on its right; the boxes
    (y0, x0, y1, x1) move with it."""
    comp = np.concatenate([tile_img, strip.astype(tile_img.dtype)], axis=1)
    b = strip_boxes.copy()
    b[:, [1, 3]] += tile_img.shape[1]
    return comp, b


def _inside_tile(masks: np.ndarray, tile_w: int) -> np.ndarray:
    """Objects found on the tile itself, not on the pasted exemplar strip (column centroid)."""
    n = masks.shape[0]
    if n == 0:
        return np.zeros(0, bool)
    cols = masks.any(axis=1)  # (N, W)
    xs = np.arange(masks.shape[2])
    weight = cols.sum(axis=1)
    cx = (cols * xs).sum(axis=1) / np.maximum(weight, 1)
    return (weight > 0) & (cx < tile_w)


def filter_sam3_labels(labels, min_size, max_size, exclude_border):
    """Size and border filters on a stitched label image; ids are kept (scores index by id)."""
    if min_size is None and max_size is None and not exclude_border:
        return labels
    areas = np.bincount(labels.ravel())
    bad = np.zeros(areas.size, bool)
    if min_size is not None:
        bad |= areas < float(min_size)
    if max_size is not None:
        bad |= areas > float(max_size)
    if exclude_border:
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        bad[np.unique(edge)] = True
    bad[0] = False
    return np.where(bad[labels], 0, labels).astype(labels.dtype, copy=False)
