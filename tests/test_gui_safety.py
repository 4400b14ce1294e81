"""Issue 19, GUI cases, on the Qt-free sessions: hand-made objects, rejected objects and File > Save,
one table and one physical-column rule for features, Export and the napari writer."""

import numpy as np
import pandas as pd
from napari.components import ViewerModel

from napari_sam3._napari import layers as L
from napari_sam3._napari.export_layer import export_layer
from napari_sam3.core.results.candidates import Candidates, boxes_from_masks
from napari_sam3.core.results.columns import HAND_PROMPT


def _overlapping():
    """Three SAM3 objects; the third lies wholly under the first (hidden by overlaps)."""
    masks = np.zeros((3, 30, 40), bool)
    masks[0, 2:14, 2:14] = True
    masks[1, 16:26, 20:32] = True
    masks[2, 4:10, 4:10] = True
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    return Candidates(masks, scores, boxes_from_masks(masks), ["cell"] * 3, "text")


def _result_layer(viewer, scale=(1.0, 1.0)):
    image = viewer.add_image(np.zeros((30, 40), np.uint8), name="img", scale=scale)
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    data, kwargs = L.labels_layer_data(_overlapping(), ref, "cell")
    return viewer.add_labels(data, **kwargs), ref


def test_a_committed_click_gets_a_new_id_and_no_sam3_score(tmp_path):
    viewer = ViewerModel()
    layer, ref = _result_layer(viewer)
    assert 3 not in np.unique(layer.data)  # hidden: a row, no pixel
    mask = np.zeros((30, 40), bool)
    mask[20:28, 2:10] = True
    new_id = L.commit_mask(layer, mask, ref)
    assert new_id == 4  # not 3, the hidden object's id
    row = layer.features[layer.features["label"] == new_id]
    assert len(row) == 1 and row["prompt"].iloc[0] == HAND_PROMPT
    assert np.isnan(row["score"].iloc[0]) and row["area"].iloc[0] == mask.sum()
    hidden = layer.features[layer.features["label"] == 3]
    assert hidden["score"].iloc[0] > 0.6  # the hidden object keeps its own row
    csv = pd.read_csv(export_layer(viewer, layer, tmp_path)["objects_csv"], dtype={"prompt": str})
    mine = csv[csv["label"] == new_id].iloc[0]
    assert mine["prompt"] == HAND_PROMPT and np.isnan(mine["score"])
    assert mine["area"] == mask.sum()
    assert csv[csv["label"] == 1]["prompt"].iloc[0] == "cell"


def test_brushed_objects_and_undone_commits_in_the_csv(tmp_path):
    from napari_sam3._writer import write_labels

    viewer = ViewerModel()
    layer, ref = _result_layer(viewer)
    layer.data[28:30, 36:40] = 9  # painted with napari's brush: no features row
    mask = np.zeros((30, 40), bool)
    mask[20:28, 2:10] = True
    new_id = L.commit_mask(layer, mask, ref)
    layer.undo()  # the commit is gone from the pixels; its row must not come back as "hidden"
    assert new_id not in np.unique(layer.data)
    paths = write_labels(str(tmp_path / "s.tif"), layer.data, layer._get_state())
    csv = pd.read_csv(paths[1], dtype={"prompt": str})
    assert new_id not in csv["label"].tolist()
    brushed = csv[csv["label"] == 9].iloc[0]
    assert brushed["prompt"] == HAND_PROMPT and np.isnan(brushed["score"])


def test_physical_columns_are_empty_without_a_pixel_size_in_features_and_export(tmp_path):
    viewer = ViewerModel()
    layer, _ = _result_layer(viewer)
    assert layer.features["area_physical"].isna().all()  # not the pixel area
    csv = pd.read_csv(export_layer(viewer, layer, tmp_path)["objects_csv"])
    assert csv["area_physical"].isna().all()
    viewer2 = ViewerModel()
    scaled, _ = _result_layer(viewer2, scale=(0.5, 0.25))
    assert np.allclose(scaled.features["area_physical"], scaled.features["area"] * 0.125)
    csv = pd.read_csv(export_layer(viewer2, scaled, tmp_path / "s")["objects_csv"])
    assert np.allclose(csv["area_physical"], csv["area"] * 0.125)


def test_file_save_with_napari_builtin_writer_has_no_rejected_objects(tmp_path):
    import tifffile
    from napari_builtins.io import napari_write_labels

    from napari_sam3._napari.review_session import ReviewSession

    viewer = ViewerModel()
    layer, _ = _result_layer(viewer)
    review = ReviewSession(layer)
    review.reject(2)
    assert 2 not in np.unique(layer.data)  # the layer holds only what may leave the program
    # what File > Save preselects: napari's builtin writer, which writes layer.data as it is
    path = napari_write_labels(str(tmp_path / "builtin.tif"), *layer.as_layer_data_tuple()[:2])
    assert 2 not in np.unique(tifffile.imread(path))
    before = (np.asarray(_overlapping().to_label_image(first_id=1)) == 2).sum()
    review.accept(2)  # a changed mind brings the object back
    assert (np.asarray(layer.data) == 2).sum() == before > 0


def test_commit_targets_name_what_they_make_and_never_offer_the_preview():
    from napari_sam3._napari.click_session import ClickResult, ClickSession

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((30, 40), np.uint8), name="cells")
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    said = []
    clicks = ClickSession(viewer, None, None, said.append, lambda *a: True)
    clicks.add_prompt_layers(image, ref)
    assert "SAM3 candidate" in viewer.layers
    choices = clicks.commit_targets("cells")
    assert choices == ["New layer: cells annotations"]  # the preview is no target
    cands = _overlapping()
    clicks.last_clicks = ClickResult(cands=cands.subset([1]), ref=ref, image=image)
    assert clicks.commit("SAM3 candidate", clear_boxes=False) == 1  # chosen anyway: not lost
    assert (viewer.layers["cells annotations"].data == 1).sum() == cands.masks[1].sum()
    clicks.last_clicks = ClickResult(cands=cands.subset([0]), ref=ref, image=image)
    assert clicks.commit(choices[0], clear_boxes=False) == 2
    assert said[-1].startswith("Committed as label 2 in 'cells annotations'")
    assert clicks.commit_targets("cells") == choices + ["cells annotations"]


def test_commit_status_does_not_outlive_an_undo():
    from napari_sam3._napari.click_session import NEW_TARGET, ClickResult, ClickSession

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((30, 40), np.uint8), name="cells")
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    said = []
    clicks = ClickSession(viewer, None, None, said.append, lambda *a: True)
    clicks.last_clicks = ClickResult(cands=_overlapping().subset([0]), ref=ref, image=image)
    assert clicks.commit(NEW_TARGET, clear_boxes=False) == 1
    assert said[-1].startswith("Committed as label 1")
    target = viewer.layers["cells annotations"]
    target.refresh()  # a redraw alone changes nothing
    assert said[-1].startswith("Committed as label 1")
    target.undo()
    assert said[-1] == "Label 1 in 'cells annotations' was undone: nothing committed now."


def test_count_table_on_screen_is_its_csv_and_features_have_no_pixel_physical(tmp_path):
    from napari_sam3._napari.count_session import CountRequest, CountSession
    from napari_sam3._napari.engine_holder import EngineHolder
    from napari_sam3._napari.plane_run import PlaneRun
    from napari_sam3.core.images import Preprocessing
    from napari_sam3.core.synthetic import synthetic_nuclei
    from napari_sam3.io.tables import read_table_csv
    from napari_sam3.testing import InlineSubmit

    viewer = ViewerModel()
    layer = viewer.add_image(synthetic_nuclei((96, 96), seed=3)[0], name="nuclei")  # no scale
    session = CountSession(viewer, EngineHolder(), InlineSubmit(), lambda step: step())
    ref = L.plane_ref(layer, viewer.dims.point, viewer.dims.displayed, 2)
    session.run_count(PlaneRun(layer, ref, Preprocessing(), ("unused", "cpu")), CountRequest())
    out = session.last
    csv = read_table_csv(session.write_csv(tmp_path / "counts.csv"))
    assert list(out.view.columns) == list(csv.columns)  # the table on screen is the CSV
    assert len(out.view) == len(csv) == out.count > 0
    features = out.labels_layer.features
    assert features["area_physical"].isna().all() and csv["area_physical"].isna().all()
