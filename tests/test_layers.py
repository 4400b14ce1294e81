"""Candidates -> layer data, plane capture, prompts and commit; no screen needed."""

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_sam3._napari import layers as L
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _cands(shape=(40, 50)):
    masks = np.stack([_disk(shape, 10, 10, 5), _disk(shape, 12, 12, 6), _disk(shape, 30, 40, 4)])
    # object 1 (score .6) is fully covered by object 2 (score .9) -> hidden
    masks[0] &= masks[1]
    return Candidates.from_masks(masks, scores=np.array([0.6, 0.9, 0.3]), prompts=["a", "a", "b"])


def _ref(layer, point=None):
    point = point if point is not None else (0,) * layer.ndim
    displayed = (layer.ndim - 2, layer.ndim - 1)
    return L.plane_ref(layer, point, displayed, 2)


def test_labels_layer_data_2d_rows_match_candidates():
    cands = _cands()
    image = Image(np.zeros((40, 50)), scale=(0.5, 0.25), translate=(3, 4), name="img")
    ref = _ref(image)
    data, kwargs = L.labels_layer_data(cands, ref, "a, b")
    assert data.shape == (40, 50)
    feats = kwargs["features"]
    assert list(feats["index"]) == [1, 2, 3] == list(feats["label"])
    assert list(feats["prompt"]) == ["a", "a", "b"]
    np.testing.assert_allclose(feats["score"], [0.6, 0.9, 0.3], rtol=1e-6)
    assert list(feats["area"]) == list(cands.areas)
    assert feats.loc[0, "visible_area"] == 0  # hidden object keeps its row
    np.testing.assert_allclose(feats["area_physical"], cands.areas * 0.5 * 0.25)
    for col in ("centroid_y", "centroid_x", "bbox_y0", "bbox_x1"):
        assert col in feats
    np.testing.assert_allclose(kwargs["scale"], (0.5, 0.25))
    np.testing.assert_allclose(kwargs["translate"], (3, 4))
    assert kwargs["name"] == "a, b · img"
    # napari shows features for a label through the 'index' column
    layer = Labels(data, **kwargs)
    status = layer.get_status((12, 12))
    assert "prompt: a" in status["coordinates"] and "score: 0.9" in status["coordinates"]


def test_hidden_objects_keep_their_ids():
    cands = _cands()
    plane = cands.to_label_image()
    hidden = L.hidden_label_image(cands, plane)
    assert set(np.unique(hidden)) == {0, 1}
    assert hidden[10, 10] == 1


def test_nd_plane_ref_and_placement_overlay_exactly():
    image = Image(
        np.zeros((5, 40, 50)), scale=(2.0, 0.5, 0.25), translate=(10, 3, 4), shear=[0.1, 0, 0]
    )
    ref = L.plane_ref(image, (10 + 2 * 3, 0, 0), (1, 2), 2)
    assert ref.index == (3,) and ref.shape == (40, 50) and ref.ndim == 3
    data, kwargs = L.labels_layer_data(_cands(), ref)
    assert data.shape == (1, 40, 50)
    labels = Labels(data, **kwargs)
    for pix in [(0, 0), (7, 9), (39, 49)]:
        np.testing.assert_allclose(
            labels.data_to_world((0, *pix)), image.data_to_world((3, *pix)), atol=1e-9
        )
    assert kwargs["name"] == "a, b [3] · Image"


def test_plane_ref_rgb_and_errors():
    image = Image(np.zeros((3, 20, 30, 3), np.uint8), rgb=True)
    ref = L.plane_ref(image, (2, 0, 0), (1, 2), 2)
    assert ref.rgb and ref.shape == (20, 30) and ref.index == (2,)
    plane = L.read_plane(image.data, ref)
    assert plane.shape == (20, 30, 3)
    with pytest.raises(Sam3Error, match="2-D view"):
        L.plane_ref(image, (2, 0, 0), (0, 1, 2), 3)
    with pytest.raises(Sam3Error, match="last two axes"):
        L.plane_ref(image, (2, 0, 0), (0, 2), 2)


def test_prompts_in_plane_flip_to_xy_and_filter_slices():
    image = Image(np.zeros((4, 40, 50)))
    ref = L.plane_ref(image, (2, 0, 0), (1, 2), 2)
    coords = np.array([[2, 10, 20], [1, 5, 5], [2.2, 30, 40]])
    xy, labels = L.points_in_plane(coords, ["positive", "positive", "negative"], ref)
    np.testing.assert_allclose(xy, [[20, 10], [40, 30]])
    assert list(labels) == [1, 0]
    rect = np.array([[2, 5, 6], [2, 5, 16], [2, 25, 16], [2, 25, 6]])
    other = rect.copy()
    other[:, 0] = 0
    boxes, blabels = L.boxes_in_plane([rect, other], ["negative", "positive"], ref)
    np.testing.assert_allclose(boxes, [[6, 5, 16, 25]])
    assert list(blabels) == [0]


def test_commit_new_id_only_on_empty_pixels_and_undo():
    data = np.zeros((3, 20, 20), np.uint16)
    data[1, 5:10, 5:10] = 4
    data[0, 0, 0] = 7
    layer = Labels(data)
    image = Image(np.zeros((3, 20, 20)))
    ref = L.plane_ref(image, (1, 0, 0), (1, 2), 2)
    mask = np.zeros((20, 20), bool)
    mask[8:14, 8:14] = True
    new_id = L.commit_mask(layer, mask, ref)
    assert new_id == 8
    out = layer.data
    assert (out[1, 5:10, 5:10] == 4).all()  # existing label untouched
    assert out[1, 12, 12] == 8 and out[1, 9, 9] == 4
    assert (out[0] == data[0]).all() and (out[2] == 0).all()  # other slices untouched
    layer.undo()
    assert (layer.data == data).all()
    assert not (layer.data == 8).any()
    # all pixels taken: nothing committed
    full = Labels(np.ones((20, 20), np.uint8))
    ref2 = L.plane_ref(Image(np.zeros((20, 20))), (0, 0), (0, 1), 2)
    assert L.commit_mask(full, mask, ref2) == 0


def test_fast_table_matches_candidates_table():
    cands = _cands()
    image = Image(np.zeros((40, 50)), scale=(0.5, 0.25))
    ref = _ref(image)
    plane = cands.to_label_image()
    ours = L.features_table(cands, plane, ref)
    core = cands.table(first_id=1, label_image=plane, scale=(0.5, 0.25))
    assert list(ours.columns) == ["index", *core.columns]
    for col in core.columns:
        np.testing.assert_array_equal(ours[col].to_numpy(), core[col].to_numpy(), err_msg=col)
    np.testing.assert_array_equal(ours["index"].to_numpy(), ours["label"].to_numpy())
    empty = L.features_table(cands.subset(np.zeros(3, bool)), plane * 0, ref)
    assert len(empty) == 0 and "score" in empty and "area_physical" in empty
    stack = Image(np.zeros((3, 40, 50)))
    on_slice = L.features_table(cands, plane, L.plane_ref(stack, (2, 0, 0), (1, 2), 2))
    assert list(on_slice["slice"]) == ["2"] * len(cands)


def test_prepare_result_filters_sorts_and_hides():
    cands = _cands()
    ref = _ref(Image(np.zeros((40, 50))))
    out = L.prepare_result(cands, ref, "a, b", 0.5, 0, "Low", with_hidden=True)
    assert list(out.kwargs["features"]["score"].round(2)) == [0.9, 0.6]
    assert out.hidden.shape == (40, 50) and out.hidden[10, 10] == 2
    none = L.prepare_result(cands, ref, "a", 0.95, 0, "Medium")
    assert none.data.max() == 0 and len(none.kwargs["features"]) == 0


def test_commit_into_one_plane_result_layer_of_the_same_slice():
    image = Image(np.zeros((5, 20, 20)))
    ref = L.plane_ref(image, (3, 0, 0), (1, 2), 2)
    cands = Candidates.from_masks(_disk((20, 20), 5, 5, 3)[None], scores=np.array([0.9]))
    data, kwargs = L.labels_layer_data(cands, ref)
    result = Labels(data, **kwargs)
    mask = _disk((20, 20), 14, 14, 3)
    assert L.commit_mask(result, mask, ref) == 2
    assert (result.data[0][mask] == 2).all()
    other = L.plane_ref(image, (1, 0, 0), (1, 2), 2)
    with pytest.raises(Sam3Error, match="another slice"):
        L.commit_mask(result, mask, other)
