"""Dense scenes: a SAM3 tile whose detections near the query cap is split and run again."""

import numpy as np

from napari_sam3.core.counting.count import count_objects
from napari_sam3.core.counting.sam3_tiled import split_tile
from napari_sam3.core.counting.tiling import Tile
from napari_sam3.core.defaults import MIN_TILE
from napari_sam3.core.synthetic import synthetic_nuclei


def test_split_tile_covers_the_tile_with_overlap():
    t = Tile(100, 50, 400, 350, 7)
    parts = split_tile(t, 20, 10)
    assert [p.index for p in parts] == [10, 11, 12, 13]
    cover = np.zeros((500, 500), bool)
    for p in parts:
        assert t.y0 <= p.y0 < p.y1 <= t.y1 and t.x0 <= p.x0 < p.x1 <= t.x1
        assert p.shape[0] < t.shape[0] and p.shape[1] < t.shape[1]
        cover[p.slices] = True
    assert cover[t.slices].all() and cover.sum() == 300 * 300
    assert parts[0].intersection(parts[1])[3] - parts[1].x0 >= 20  # they overlap
    assert split_tile(Tile(0, 0, MIN_TILE + 10, MIN_TILE + 10), 16, 0) == []  # too small


def test_tiles_at_the_query_cap_are_split(engine):
    """The tiny checkpoint has 20 queries and, at score 0, returns all of them on every tile: each
    tile is at the cap, so it is split (down to the tile minimum); at a high threshold none is."""
    img, _ = synthetic_nuclei((256, 256), seed=3)
    dense = count_objects(img, "sam3", prompt="nucleus", engine=engine, tile=160, min_score=0.0)
    assert dense.meta["resplit_tiles"] >= 4
    assert dense.meta["tiles"] > 4
    assert any("near SAM3's limit of 20" in w for w in dense.warnings)
    sparse = count_objects(img, "sam3", prompt="nucleus", engine=engine, tile=160, min_score=0.9)
    assert sparse.meta["resplit_tiles"] == 0 and sparse.meta["tiles"] == 4
