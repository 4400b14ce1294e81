"""Classical counting of planes too large to count in one piece: overlapping tiles, stitched.

Memory is bounded by the tile, not the plane: each tile (``tile`` px plus an overlap on every side)
is counted with `count.iter_count`, and the objects whose centroid falls in the tile's own core
(the tiles' cores cover the plane without overlap) are pasted into the plane's label image, on
pixels no earlier tile took. The overlap (4 diameters, at least 64 px) is wider than an object, so
an object counted by its core's tile lies whole inside that tile. The objects table is measured at
paste time from the pasted pixels (`objects.objects_table` of the tile window), so it matches the
final label image exactly and no full-plane measurement pass is needed.

The diameter (when not given) is estimated once, on the central tile, and used for every tile, so
every tile splits touching objects at the same scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_sam3.core.defaults import DEFAULT_COUNT_METHOD
from napari_sam3.core.progress import Progress
from napari_sam3.core.results.objects import empty_objects_table, objects_table

__all__ = ["LARGE_PLANE_PIXELS", "is_large_plane", "iter_count_large_plane"]

LARGE_PLANE_PIXELS = 8192 * 8192  # above this, `iter_count_large_plane` (the batch CLI uses it)
TILE = 4096


def is_large_plane(image: np.ndarray, rgb: bool | None = None) -> bool:
    shape = np.shape(image)
    h, w = shape[:2] if (rgb or (len(shape) == 3 and shape[-1] in (3, 4))) else shape[-2:]
    return int(h) * int(w) > LARGE_PLANE_PIXELS


def _cores(n: int, tile: int) -> list[tuple[int, int]]:
    k = max(1, -(-n // tile))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def iter_count_large_plane(
    image: np.ndarray,
    diameter: float | None = None,
    *,
    rgb: bool | None = None,
    tile: int = TILE,
    scale: tuple[float, float] | None = None,
    prompt: str | None = None,
    polarity: str = "auto",
    method: str = DEFAULT_COUNT_METHOD,
    net=None,
):
    """Count a large 2-D plane without SAM3 (``method`` "learned" or "classical"), tile by tile. Yields `Progress`; returns
    ``(labels, table, diameter)``: uint32 labels of the plane, the objects table
    (`objects.objects_table` columns), the diameter used."""
    from napari_sam3.core.counting.count import iter_count
    from napari_sam3.core.progress import run_to_end

    image = np.asarray(image)
    color = bool(rgb) if rgb is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
    h, w = image.shape[:2] if color else image.shape
    rows, cols = _cores(h, tile), _cores(w, tile)
    if diameter is None:
        yield Progress("Estimating the object size on the central tile", 0, None)
        (r0, r1), (c0, c1) = rows[len(rows) // 2], cols[len(cols) // 2]
        centre = run_to_end(
            iter_count(image[r0:r1, c0:c1], method, rgb=rgb, polarity=polarity, net=net)
        )
        diameter = centre.diameter if np.isfinite(centre.diameter) else 20.0
    overlap = max(64, int(np.ceil(4 * float(diameter))))
    labels = np.zeros((h, w), np.uint32)
    parts: list[pd.DataFrame] = []
    next_id = 1
    total = len(rows) * len(cols)
    for k, ((r0, r1), (c0, c1)) in enumerate((r, c) for r in rows for c in cols):
        yield Progress("Counting tiles", k, total)
        y0, y1 = max(0, r0 - overlap), min(h, r1 + overlap)
        x0, x1 = max(0, c0 - overlap), min(w, c1 + overlap)
        tile_image = image[y0:y1, x0:x1]
        res = run_to_end(
            iter_count(tile_image, method, diameter=diameter, rgb=rgb, polarity=polarity, net=net)
        )
        t = res.table
        if not len(t):
            continue
        cy, cx = t["centroid_y"].to_numpy() + y0, t["centroid_x"].to_numpy() + x0
        own = (cy >= r0) & (cy < r1) & (cx >= c0) & (cx < c1)
        ids = t["label"].to_numpy()[own].astype(np.int64)
        if not ids.size:
            continue
        lut = np.zeros(int(res.labels.max()) + 1, np.uint32)
        lut[ids] = np.arange(next_id, next_id + ids.size, dtype=np.uint32)
        window = labels[y0:y1, x0:x1]
        new = lut[res.labels]
        free = window == 0
        window[free] = new[free]  # earlier tiles keep their pixels
        del new, free
        parts.append(
            objects_table(
                window,
                ids=np.arange(next_id, next_id + ids.size, dtype=np.int64),
                prompts=prompt or method,
                scale=scale,
                offset=(y0, x0),
            )
        )
        next_id += ids.size
    yield Progress("Counting tiles", total, total)
    table = pd.concat(parts, ignore_index=True) if parts else empty_objects_table()
    table = table[table["visible_area"] > 0].reset_index(drop=True)
    return labels, table, float(diameter)
