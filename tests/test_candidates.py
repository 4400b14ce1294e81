"""core.candidates: filtering without a model, the overlap policy, label images and the table."""

import numpy as np
import pytest

from napari_sam3.core.results.candidates import TABLE_COLUMNS, Candidates, boxes_from_masks


def square(shape, y0, x0, size):
    m = np.zeros(shape, bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


@pytest.fixture
def three():
    shape = (20, 30)
    masks = np.stack(
        [square(shape, 2, 2, 6), square(shape, 4, 4, 6), square(shape, 12, 20, 5)]
    )  # 0 and 1 overlap
    return Candidates.from_masks(masks, np.array([0.3, 0.9, 0.5]), ["cell", "cell", "nucleus"])


def test_filter_by_score_and_area(three):
    assert len(three.filter(0.4)) == 2
    kept = three.filter(0.4)
    np.testing.assert_allclose(kept.scores, [0.9, 0.5])
    assert list(kept.prompts) == ["cell", "nucleus"]
    assert len(three.filter(0.0, min_area=30)) == 2  # the 5x5 square goes
    assert len(three.filter(None)) == 3
    assert len(three.filter(0.95)) == 0 and three.filter(0.95).shape == (20, 30)


def test_nan_scores_always_pass(three):
    c = Candidates.from_masks(three.masks)  # classical: no confidence
    assert np.isnan(c.scores).all()
    assert len(c.filter(0.99)) == 3


def test_sorted_by_score_nan_last():
    masks = np.zeros((3, 8, 8), bool)
    c = Candidates.from_masks(masks, np.array([0.2, np.nan, 0.7]))
    s = c.sorted_by_score()
    assert (
        s.scores[0] == np.float32(0.7) and s.scores[1] == np.float32(0.2) and np.isnan(s.scores[2])
    )


def test_overlap_higher_score_wins(three):
    labels = three.to_label_image()
    # pixel (5, 5) lies in both 0 (score .3) and 1 (score .9): candidate 1 -> id 2
    assert labels[5, 5] == 2
    assert labels[2, 2] == 1  # only in candidate 0
    assert labels[13, 21] == 3
    assert labels[0, 0] == 0


def test_ties_go_to_the_lower_id():
    shape = (10, 10)
    masks = np.stack([square(shape, 0, 0, 5), square(shape, 0, 0, 5)])
    assert (Candidates.from_masks(masks, np.array([0.5, 0.5])).to_label_image()[:5, :5] == 1).all()
    nan = Candidates.from_masks(masks)  # NaN scores tie too
    assert (nan.to_label_image()[:5, :5] == 1).all()
    mixed = Candidates.from_masks(masks, np.array([np.nan, 0.1]))  # any score beats NaN
    assert (mixed.to_label_image()[:5, :5] == 2).all()


def test_hidden_object_keeps_its_row():
    shape = (10, 10)
    big = square(shape, 0, 0, 8)
    small = square(shape, 2, 2, 3)  # fully inside big
    c = Candidates.from_masks(np.stack([small, big]), np.array([0.2, 0.9]), "cell")
    labels = c.to_label_image()
    assert set(np.unique(labels)) == {0, 2}  # id 1 is painted over
    t = c.table(label_image=labels)
    assert len(t) == 2
    row = t[t["label"] == 1].iloc[0]
    assert row["visible_area"] == 0 and row["area"] == 9
    assert t[t["label"] == 2].iloc[0]["visible_area"] == 64


def test_label_image_dtype():
    shape = (4, 4)
    assert Candidates.empty(shape).to_label_image().dtype == np.uint16
    few = Candidates.from_masks(np.zeros((3, *shape), bool))
    assert few.to_label_image().dtype == np.uint16
    assert few.label_dtype() == np.uint16
    assert few.label_dtype(first_id=65534) == np.uint32  # ids 65534..65536 do not fit
    assert few.to_label_image(first_id=65534).dtype == np.uint32
    edge = Candidates.from_masks(np.zeros((2, *shape), bool))
    assert edge.label_dtype(first_id=65534) == np.uint16  # 65534, 65535 fit


def test_first_id_offsets_labels(three):
    labels = three.to_label_image(first_id=10)
    assert set(np.unique(labels).tolist()) == {0, 10, 11, 12}
    t = three.table(first_id=10)
    assert list(t["label"]) == [10, 11, 12]


def test_table_columns_and_values(three):
    t = three.table()
    assert tuple(t.columns) == TABLE_COLUMNS
    assert len(t) == 3
    r = t.iloc[2]
    assert r["prompt"] == "nucleus" and r["kind"] == "text"
    assert r["area"] == 25 and r["visible_area"] == 25
    assert r["centroid_y"] == pytest.approx(14.0) and r["centroid_x"] == pytest.approx(22.0)
    assert (r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"]) == (12, 20, 17, 25)
    assert t["score"].dtype == np.float64 and t["label"].dtype == np.int64


def test_table_optional_columns(three):
    intensity = np.arange(600, dtype=float).reshape(20, 30)
    t = three.table(scale=(0.5, 2.0), intensity=intensity)
    for col in (
        "area_physical",
        "centroid_y_physical",
        "centroid_x_physical",
        "mean_intensity",
        "max_intensity",
    ):
        assert col in t.columns
    assert t.iloc[2]["area_physical"] == pytest.approx(25 * 1.0)
    assert t.iloc[2]["max_intensity"] == intensity[16, 24]
    clicks = Candidates.from_masks(
        three.masks, three.scores, "points", "points", iou_scores=three.scores
    )
    assert "iou_score" in clicks.table().columns


def test_empty_candidates_table():
    t = Candidates.empty((5, 5)).table()
    assert tuple(t.columns) == TABLE_COLUMNS and len(t) == 0


def test_zero_candidates_areas_filter_and_full_table():
    none = Candidates.empty((6, 7))
    assert none.areas.shape == (0,) and none.areas.dtype == np.int64
    assert len(none.filter(0.5, min_area=10)) == 0 and none.filter(min_area=3).shape == (6, 7)
    t = none.table(scale=(0.5, 0.5), intensity=np.ones((6, 7)), first_id=5)
    assert len(t) == 0 and {"area_physical", "mean_intensity"} <= set(t.columns)
    assert tuple(t.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS


def test_table_matches_full_plane_reference():
    """The box-cropped table gives what a whole-plane computation gives (masks with gaps,
    an empty mask, RGB intensity, model boxes that differ from the masks)."""
    rng = np.random.default_rng(0)
    shape = (40, 50)
    masks = rng.random((5, *shape)) > 0.97
    masks[1] = False  # empty
    masks[2, 10:20, 30:45] = True
    boxes = np.array([[0, 0, 50, 40]] * 5, np.float32)  # loose model boxes: kept as given
    c = Candidates(masks, rng.random(5), boxes, ["a"] * 5)
    intensity = rng.random((*shape, 3))
    t = c.table(scale=(2.0, 0.5), intensity=intensity)
    for i in range(5):
        rr, cc = np.nonzero(masks[i])
        row = t.iloc[i]
        assert row["area"] == rr.size == c.areas[i]
        if rr.size == 0:
            assert np.isnan(row["centroid_y"]) and np.isnan(row["mean_intensity"])
            continue
        assert row["centroid_y"] == pytest.approx(rr.mean())
        assert row["centroid_x"] == pytest.approx(cc.mean())
        assert row["mean_intensity"] == pytest.approx(intensity[rr, cc].mean())
        assert row["max_intensity"] == pytest.approx(intensity[rr, cc].max())
        assert row["centroid_x_physical"] == pytest.approx(0.5 * cc.mean())
    assert list(t["bbox_x1"]) == [50] * 5 and list(t["bbox_y1"]) == [40] * 5


def test_from_label_image_uses_distinct_ids_not_max():
    labels = np.zeros((10, 10), np.uint16)
    labels[0:2, 0:2] = 3
    labels[5:7, 5:7] = 40  # ids with gaps
    c = Candidates.from_label_image(labels)
    assert len(c) == 2 and c.kind == "classical"
    assert c.areas.tolist() == [4, 4]


def test_concatenate_and_subset(three):
    both = Candidates.concatenate([three, three.subset([0])])
    assert len(both) == 4 and both.iou_scores is None
    assert both.concepts == ["cell", "nucleus"]
    with pytest.raises(ValueError):
        Candidates.concatenate([])


def test_concatenate_by_score_equals_concatenate_then_sort(three):
    rng = np.random.default_rng(0)
    other = Candidates(
        rng.random((3, *three.shape)) > 0.5, [0.9, 0.05, 0.5], np.zeros((3, 4)), ["a", "b", "c"]
    )
    merged = Candidates.concatenate([three, other], by_score=True)
    reference = Candidates.concatenate([three, other]).sorted_by_score()
    np.testing.assert_array_equal(merged.masks, reference.masks)
    np.testing.assert_array_equal(merged.scores, reference.scores)
    np.testing.assert_array_equal(merged.boxes, reference.boxes)
    assert list(merged.prompts) == list(reference.prompts)
    assert np.all(np.diff(merged.scores) <= 0)


def test_boxes_from_masks_exclusive_end():
    m = square((10, 12), 2, 3, 4)
    np.testing.assert_array_equal(boxes_from_masks(m[None]), [[3, 2, 7, 6]])
    np.testing.assert_array_equal(boxes_from_masks(np.zeros((1, 4, 4), bool)), [[0, 0, 0, 0]])


def test_candidates_compare_by_identity(three):
    same = three.subset(slice(None))  # equal arrays, another result
    assert three == three and three != same
    seen = {three: "first"}  # usable as a key: a result is found by identity only
    assert seen.get(three) == "first" and seen.get(same) is None


def test_bad_masks_shape():
    with pytest.raises(ValueError, match="N, H, W"):
        Candidates(np.zeros((4, 4), bool), [], np.zeros((0, 4)), [])
