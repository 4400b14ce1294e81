"""Tile grids, tile sizes, stitching and de-duplication (pure numpy, no model)."""

import numpy as np
import pytest

from napari_sam3.core.counting.tiling import (
    Tile,
    choose_tile_size,
    exemplar_strip,
    objects_from_masks,
    stitch,
    tile_grid,
)
from napari_sam3.core.synthetic import synthetic_nuclei


@pytest.mark.parametrize(
    "shape,tile,overlap", [((100, 100), 40, 10), ((97, 251), 64, 16), ((30, 500), 64, 8)]
)
def test_tile_grid_covers_image_with_overlap(shape, tile, overlap):
    tiles = tile_grid(shape, tile, overlap)
    cover = np.zeros(shape, int)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= shape[0] and 0 <= t.x0 < t.x1 <= shape[1]
        assert t.shape == (min(tile, shape[0]), min(tile, shape[1]))
        cover[t.slices] += 1
    assert cover.min() >= 1
    ys = sorted({t.y0 for t in tiles})
    xs = sorted({t.x0 for t in tiles})
    for starts, n in ((ys, shape[0]), (xs, shape[1])):
        if len(starts) > 1:
            steps = np.diff(starts)
            assert (min(tile, n) - steps).min() >= overlap  # neighbours overlap enough
        assert starts[-1] + min(tile, n) == n  # last tile flush with the edge
    assert [t.index for t in tiles] == list(range(len(tiles)))


def test_tile_grid_single_tile_when_image_fits():
    assert tile_grid((50, 60), 64, 16) == [Tile(0, 0, 50, 60, 0)]


def test_choose_tile_size_scales_objects_to_target():
    # 10 px objects, 40 model px each -> tiles of 252 px (unless the count limit is smaller)
    side = choose_tile_size(10, (4000, 4000), target_px=40, max_objects=10_000)
    assert side == 252
    assert 10 * 1008 / side == pytest.approx(40, rel=0.01)
    # the object-count limit: a densely packed tile holds at most max_objects objects
    side = choose_tile_size(10, (4000, 4000), target_px=40, max_objects=150, coverage=0.5)
    assert (side**2 * 0.5) / (np.pi * 25) <= 151
    assert side < 252
    assert choose_tile_size(None, (300, 500)) == 500
    assert choose_tile_size(10, (100, 120)) == 120  # never larger than the image
    assert choose_tile_size(1, (4000, 4000)) == 64  # never below min_tile


def test_objects_from_masks_flags_objects_cut_by_inner_edges():
    tile = Tile(10, 10, 30, 30, 3)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 5:8, 5:8] = True  # inside
    masks[1, 0:4, 5:8] = True  # touches the top edge, which is inside the image
    masks[2, 5:8, 16:20] = True  # touches the right edge, which is the image border
    objs = objects_from_masks(masks, [0.9, 0.8, 0.7], ["a", "b", "c"], tile, (40, 30))
    assert [o.cut for o in objs] == [False, True, False]
    assert objs[0].bbox == (15, 15, 18, 18)
    assert objs[1].tile == 3 and objs[1].prompt == "b" and objs[1].area == 12


def _objects_for(gt, tiles, score=0.9):
    objs = []
    for t in tiles:
        sub = gt[t.slices]
        ids = np.unique(sub)
        ids = ids[ids > 0]
        masks = sub[None] == ids[:, None, None]
        objs += objects_from_masks(masks, [score] * len(ids), ["n"] * len(ids), t, gt.shape)
    return objs


def _assert_same_objects(gt, labels):
    assert len(np.unique(labels)) - 1 == gt.max()
    for g in range(1, gt.max() + 1):
        ids = np.unique(labels[gt == g])
        assert ids.size == 1 and ids[0] > 0
    assert np.array_equal(labels > 0, gt > 0)


def test_stitch_rebuilds_ground_truth_from_overlapping_tiles():
    _, gt = synthetic_nuclei((200, 230), seed=5, diameter=14)
    tiles = tile_grid(gt.shape, 70, 24)  # overlap > object size: every object whole somewhere
    labels, scores, prompts = stitch(_objects_for(gt, tiles), gt.shape, tiles)
    _assert_same_objects(gt, labels)
    assert len(scores) == len(prompts) == labels.max()
    assert set(prompts) == {"n"}


def test_stitch_merges_objects_larger_than_the_overlap():
    _, gt = synthetic_nuclei((240, 240), seed=4, diameter=30, coverage=0.4)
    tiles = tile_grid(gt.shape, 64, 12)  # objects (~30 px) are cut by several seams
    objs = _objects_for(gt, tiles)
    assert sum(o.cut for o in objs) > gt.max()  # many pieces to merge
    labels, _, _ = stitch(objs, gt.shape, tiles)
    _assert_same_objects(gt, labels)


def test_stitch_removes_duplicates_and_keeps_the_higher_score():
    shape = (50, 50)
    tiles = [Tile(0, 0, 50, 50, 0)]
    a = np.zeros(shape, bool)
    a[10:20, 10:20] = True
    b = np.zeros(shape, bool)
    b[11:20, 10:20] = True  # IoU 0.9 with a: same object, found twice (SAM3 has no NMS)
    c = np.zeros(shape, bool)
    c[18:30, 18:30] = True  # a different object that touches a
    objs = objects_from_masks(
        np.stack([a, b, c]), [0.5, 0.9, 0.7], ["x", "y", "z"], tiles[0], shape
    )
    labels, scores, prompts = stitch(objs, shape, tiles)
    assert labels.max() == 2
    assert list(scores) == [0.9, 0.7] and prompts == ["y", "z"]
    assert (labels == 1).sum() == b.sum()  # the higher-scored copy, painted first
    assert (labels == 2).sum() == c.sum() - (b & c).sum()  # the overlap stays with the first


def test_exemplar_strip_copies_boxes_with_margin():
    plane = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120)
    strip, boxes, kept = exemplar_strip(
        plane, [[10, 20, 20, 32], [50, 50, 70, 60]], height=80, margin=4
    )
    assert strip.shape[0] == 80 and strip.dtype == plane.dtype
    assert len(boxes) == 2 and list(kept) == [0, 1]
    y0, x0, y1, x1 = boxes[0].astype(int)
    assert np.array_equal(strip[y0:y1, x0:x1], plane[10:20, 20:32])
    y0, x0, y1, x1 = boxes[1].astype(int)
    assert np.array_equal(strip[y0:y1, x0:x1], plane[50:70, 50:60])
    # a crop that does not fit under the others is left out
    _, boxes, kept = exemplar_strip(
        plane, [[0, 0, 80, 10], [0, 0, 60, 10], [0, 0, 5, 5]], height=70, margin=2
    )
    assert list(kept) == [1, 2] and len(boxes) == 2  # the first is too tall, the others fit
