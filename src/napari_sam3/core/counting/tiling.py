"""Tile grids, stitching and cross-tile de-duplication: pure numpy, no model.

SAM3 resizes every input to 1008 x 1008 px and has a fixed number of object queries, so a large
image of small cells is run in tiles: each tile is small enough that one object covers tens of model
pixels and that a tile holds fewer objects than the detector can return. Tiles overlap by more than an
object, so every object lies whole in at least one tile; `stitch` then keeps one copy of each object:

* a duplicate (IoU >= ``iou_dup``, or one inside the other by ``contain_dup``), found by two tiles
  or twice by one tile (SAM3 has no NMS), is kept once: whole copies first, by score, then the
  pieces cut by a tile edge, largest first;
* pieces of an object cut by seams (both touch an inner tile edge and they agree inside the two
  tiles' shared strip) are merged into one object, also across several seams, so objects larger
  than the overlap survive too;
* where different objects overlap, the pixel keeps the object painted first (whole, higher score).

Coordinates are (row, col) here; boxes handed to the engine are converted to x/y in sam3_counting.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Tile",
    "TileObject",
    "choose_tile_size",
    "exemplar_strip",
    "objects_from_masks",
    "stitch",
    "tile_grid",
]

MODEL_SIZE = 1008  # SAM3's input side in pixels


@dataclass(frozen=True)
class Tile:
    """A window ``[y0:y1, x0:x1]`` of the image (exclusive ends)."""

    y0: int
    x0: int
    y1: int
    x1: int
    index: int = 0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def intersection(self, other: Tile) -> tuple[int, int, int, int] | None:
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        return (y0, x0, y1, x1) if (y1 > y0 and x1 > x0) else None


def choose_tile_size(
    diameter: float | None,
    image_shape: tuple[int, int],
    *,
    target_px: float = 40.0,
    model_size: int = MODEL_SIZE,
    max_objects: int = 150,
    coverage: float = 0.5,
    min_tile: int = 64,
) -> int:
    """Side of a square tile, in image pixels, for objects of ``diameter`` px.

    Two limits, the smaller wins: (1) one object should span ``target_px`` model pixels after the
    tile is resized to ``model_size``; (2) a tile densely packed (``coverage`` of its area covered)
    should hold at most ``max_objects`` objects (the detector returns a fixed number of queries).
    Never below ``min_tile`` (or ~3 objects), never above the image. ``diameter`` None: one tile.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    side = max(h, w)
    if diameter is None or not np.isfinite(diameter) or diameter <= 0:
        return side
    by_scale = diameter * model_size / float(target_px)
    by_count = math.sqrt(max_objects * math.pi * diameter**2 / 4.0 / coverage)
    tile = min(by_scale, by_count)
    tile = max(tile, min_tile, 3 * diameter)
    return int(min(side, math.ceil(tile)))


def tile_grid(shape: tuple[int, int], tile: int | tuple[int, int], overlap: int) -> list[Tile]:
    """Overlapping tiles that cover ``shape``: evenly spaced, the last ones flush with the edge.

    Neighbouring tiles overlap by at least ``overlap`` px (more where the spacing rounds).
    """
    h, w = int(shape[0]), int(shape[1])
    th, tw = (tile, tile) if np.isscalar(tile) else tile
    th, tw = min(int(th), h), min(int(tw), w)
    if th <= 0 or tw <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    ys = _starts(h, th, overlap)
    xs = _starts(w, tw, overlap)
    tiles = []
    for y in ys:
        for x in xs:
            tiles.append(Tile(y, x, y + th, x + tw, len(tiles)))
    return tiles


def _starts(n: int, t: int, overlap: int) -> list[int]:
    if t >= n:
        return [0]
    overlap = max(0, min(int(overlap), t - 1))
    count = math.ceil((n - overlap) / (t - overlap))
    count = max(count, 2)
    return [int(round(i * (n - t) / (count - 1))) for i in range(count)]


# ----------------------------------------------------------------------------- objects
@dataclass
class TileObject:
    """One object found in one tile, in image coordinates: a crop mask at ``(y0, x0)``."""

    y0: int
    x0: int
    mask: np.ndarray  # bool crop
    score: float
    prompt: str
    tile: int
    cut: bool  # touches an edge of its tile that lies inside the image

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]


def objects_from_masks(
    masks: np.ndarray,
    scores: np.ndarray,
    prompts,
    tile: Tile,
    image_shape: tuple[int, int],
) -> list[TileObject]:
    """Tile-sized masks (N, th, tw) -> `TileObject`s in image coordinates; empty masks are dropped."""
    masks = np.asarray(masks, dtype=bool)
    h, w = image_shape
    inner = (tile.y0 > 0, tile.x0 > 0, tile.y1 < h, tile.x1 < w)  # top, left, bottom, right
    out = []
    for i in range(masks.shape[0]):
        m = masks[i]
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        cut = (
            (inner[0] and r0 == 0)
            or (inner[1] and c0 == 0)
            or (inner[2] and r1 == m.shape[0])
            or (inner[3] and c1 == m.shape[1])
        )
        out.append(
            TileObject(
                tile.y0 + int(r0),
                tile.x0 + int(c0),
                m[r0:r1, c0:c1].copy(),
                float(scores[i]),
                str(prompts[i]),
                tile.index,
                bool(cut),
            )
        )
    return out


def stitch(
    objects: list[TileObject],
    shape: tuple[int, int],
    tiles: list[Tile],
    *,
    iou_dup: float = 0.5,
    contain_dup: float = 0.8,
    seam_iou: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Paint tile objects into one label image without duplicates; merge pieces cut by seams.

    Returns ``(labels, scores, prompts)``: an int32 label image with ids 1..N (sequential), and the
    score and prompt of each id at index ``id - 1``. See the module docstring for the rules.
    """
    h, w = int(shape[0]), int(shape[1])
    canvas = np.zeros((h, w), np.int32)
    tiles_by_index = {t.index: t for t in tiles}
    # Whole objects first (best score first), then cut pieces (largest first, so a piece is
    # compared with the biggest piece of its object already painted).
    order = sorted(
        range(len(objects)),
        key=lambda i: (
            objects[i].cut,
            -objects[i].area if objects[i].cut else 0,
            -np.nan_to_num(objects[i].score, nan=-np.inf),
            i,
        ),
    )
    kept_area: list[int] = []
    kept_tiles: list[set[int]] = []
    kept_cut: list[bool] = []
    kept_score: list[float] = []
    kept_prompt: list[str] = []
    kept_bbox: list[tuple[int, int, int, int]] = []
    for i in order:
        o = objects[i]
        y0, x0, y1, x1 = o.bbox
        region = canvas[y0:y1, x0:x1]
        under = region[o.mask]
        ids, inter = np.unique(under[under > 0], return_counts=True)
        area = o.area
        drop = False
        merge_ids: list[int] = []
        for k, it in zip(ids.tolist(), inter.tolist(), strict=True):
            ka = kept_area[k - 1]
            if (
                o.cut
                and kept_cut[k - 1]
                and o.tile not in kept_tiles[k - 1]
                and _agree_in_shared_strip(
                    o, k, canvas, tiles_by_index, kept_tiles[k - 1], seam_iou
                )
            ):
                merge_ids.append(k)  # two pieces of one object cut by a seam
                continue
            # SAM3 has no NMS: duplicates within one tile are removed by the same rule.
            iou = it / (area + ka - it)
            if iou >= iou_dup or it / min(area, ka) >= contain_dup:
                drop = True
                break
        if drop:
            continue
        free = o.mask & (region == 0)
        if merge_ids:
            # One object cut by several seams: its pieces (and the pieces they hold) become one id.
            target = min(merge_ids)
            for k in merge_ids:
                if k != target:
                    ky0, kx0, ky1, kx1 = kept_bbox[k - 1]
                    sub = canvas[ky0:ky1, kx0:kx1]
                    sub[sub == k] = target
                    kept_area[target - 1] += kept_area[k - 1]
                    kept_area[k - 1] = 0
                    kept_tiles[target - 1] |= kept_tiles[k - 1]
                    kept_score[target - 1] = max(kept_score[target - 1], kept_score[k - 1])
                    kept_bbox[target - 1] = _union_box(kept_bbox[target - 1], kept_bbox[k - 1])
            region[free] = target
            kept_area[target - 1] += int(free.sum())
            kept_tiles[target - 1].add(o.tile)
            kept_score[target - 1] = max(kept_score[target - 1], o.score)
            kept_bbox[target - 1] = _union_box(kept_bbox[target - 1], o.bbox)
            continue
        if not free.any():
            continue
        new_id = len(kept_area) + 1
        region[free] = new_id
        kept_area.append(area)
        kept_tiles.append({o.tile})
        kept_cut.append(o.cut)
        kept_score.append(o.score)
        kept_prompt.append(o.prompt)
        kept_bbox.append(o.bbox)
    # Objects whose every pixel was taken by earlier ones vanish; renumber to 1..N.
    present = np.zeros(len(kept_area) + 1, bool)
    present[np.unique(canvas)] = True
    present[0] = False
    remap = np.zeros(len(kept_area) + 1, np.int32)
    remap[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    labels = remap[canvas]
    idx = np.flatnonzero(present[1:])
    scores = np.asarray(kept_score, dtype=np.float64)[idx] if idx.size else np.zeros(0)
    prompts = [kept_prompt[i] for i in idx]
    return labels, scores, prompts


def _union_box(a, b):
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _agree_in_shared_strip(o, k, canvas, tiles_by_index, k_tiles, seam_iou) -> bool:
    """Do object ``o`` and painted object ``k`` cover the same pixels where their tiles overlap?"""
    t_o = tiles_by_index.get(o.tile)
    for tk in k_tiles:
        t_k = tiles_by_index.get(tk)
        if t_o is None or t_k is None or tk == o.tile:
            continue
        rect = t_o.intersection(t_k)
        if rect is None:
            continue
        ry0, rx0, ry1, rx1 = rect
        y0, x0, y1, x1 = o.bbox
        oy0, ox0, oy1, ox1 = max(ry0, y0), max(rx0, x0), min(ry1, y1), min(rx1, x1)
        if oy1 <= oy0 or ox1 <= ox0:
            continue
        a = o.mask[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        b = canvas[oy0:oy1, ox0:ox1] == k
        # b outside the crop of a also counts against agreement
        b_total = int((canvas[ry0:ry1, rx0:rx1] == k).sum())
        inter = int((a & b).sum())
        union = int(a.sum()) + b_total - inter
        if union and inter / union >= seam_iou:
            return True
    return False


# ----------------------------------------------------------------------------- exemplars
def exemplar_strip(
    plane: np.ndarray,
    boxes_yx: np.ndarray,
    height: int,
    margin: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops around exemplar boxes stacked in a column, to paste beside a tile that lacks them.

    SAM3 reads an exemplar box from the features of the image it is given, so a tile that does not
    contain the exemplar cannot use it; pasting the exemplar next to the tile fixes that. Boxes are
    ``(y0, x0, y1, x1)`` in plane pixels. Returns the strip (``height`` rows, as wide as the widest
    crop; crops that do not fit below each other are left out), the boxes in strip coordinates and
    the indices of the input boxes they come from. Works on (H, W) and (H, W, C) planes.
    """
    boxes = np.asarray(boxes_yx, dtype=float).reshape(-1, 4)
    h, w = plane.shape[:2]
    crops, out_boxes, kept = [], [], []
    y = 0
    for i, b in enumerate(boxes):
        y0 = max(0, int(math.floor(b[0])) - margin)
        x0 = max(0, int(math.floor(b[1])) - margin)
        y1 = min(h, int(math.ceil(b[2])) + margin)
        x1 = min(w, int(math.ceil(b[3])) + margin)
        if y1 <= y0 or x1 <= x0 or y + (y1 - y0) > height:
            continue
        crops.append((y, plane[y0:y1, x0:x1]))
        out_boxes.append((y + b[0] - y0, b[1] - x0, y + b[2] - y0, b[3] - x0))
        kept.append(i)
        y += y1 - y0
    width = max((c.shape[1] for _, c in crops), default=0)
    strip = np.zeros((height, width, *plane.shape[2:]), dtype=plane.dtype)
    if crops:
        fill = np.median(plane[:: max(1, h // 64), :: max(1, w // 64)], axis=(0, 1))
        strip[...] = fill.astype(plane.dtype)
        for yy, c in crops:
            strip[yy : yy + c.shape[0], : c.shape[1]] = c
    return strip, np.asarray(out_boxes, dtype=np.float64).reshape(-1, 4), np.asarray(kept, int)
