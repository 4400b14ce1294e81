"""Issue 14 in a real napari viewer (``xvfb-run -a``): propagate clicks through a stack, review objects."""

import numpy as np
import pytest

from napari_sam3._widget import Sam3Widget

pytestmark = pytest.mark.gui

TIMEOUT = 120_000


@pytest.fixture(scope="module")
def video_checkpoint():
    from napari_sam3.testing import tiny_checkpoint_dir

    return tiny_checkpoint_dir(video=True)


@pytest.fixture
def sam3(make_napari_viewer, video_checkpoint):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(video_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    yield viewer, widget
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)


def test_propagate_clicks_and_a_box_through_the_stack(qtbot, sam3, video_checkpoint):
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.tracking.click_tracking import ObjectPrompt, track_objects

    viewer, widget = sam3
    tab = widget.segment_tab
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 48)).astype(np.uint8)
    viewer.add_image(stack, name="stack")
    tab.image_combo.setCurrentText("stack")
    viewer.dims.set_current_step(0, 1)
    clicks, boxes = tab.add_prompt_layers()
    clicks.add([[1, 17, 20]])  # object 1 on slice 1 (row 17, column 20)
    clicks.add([[2, 18, 21]])  # ... and a correction on slice 2
    assert tab.new_object_btn.isEnabled()
    tab.new_object_btn.click()  # the box belongs to object 2
    boxes.add(
        [np.array([[1, 5, 30], [1, 5, 45], [1, 30, 45], [1, 30, 30]], float)],
        shape_type="rectangle",
    )
    tab.propagate_btn.click()
    name = "SAM3 objects: stack"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = viewer.layers[name]
    assert layer.data.shape == stack.shape
    assert layer.features["label"].tolist() == [1, 2]
    assert set(layer.features["status"]) == {"unreviewed"}  # they join the review table
    expected = track_objects(
        Sam3Engine.load(str(video_checkpoint), device="cpu"),
        stack,
        [
            ObjectPrompt(1, 1, [[20, 17]], [1]),
            ObjectPrompt(1, 2, [[21, 18]], [1]),
            ObjectPrompt(2, 1, box_xyxy=[30, 5, 45, 30]),
        ],
    )
    np.testing.assert_array_equal(layer.data, expected.labels)
    assert layer.metadata["sam3_track_meta"]["object_scores"] == expected.meta["object_scores"]
    assert layer.metadata["sam3_track_meta"]["objects"] == [1, 2]


def test_propagate_without_clicks_is_refused(sam3):
    viewer, widget = sam3
    tab = widget.segment_tab
    viewer.add_image(np.zeros((3, 20, 20), np.uint8), name="stack")
    tab.image_combo.setCurrentText("stack")
    assert tab.propagate_btn.isEnabled()
    assert tab.run_track is not None
    from napari_sam3._qt.propagate_action import start_propagation

    assert start_propagation(tab) is None  # a notification names the fix; nothing runs
    assert widget.idle


def test_review_panel_follows_the_layer(qtbot, sam3):
    from napari_sam3.core.results.candidates import Candidates, boxes_from_masks

    viewer, widget = sam3
    masks = np.zeros((3, 30, 40), bool)
    masks[0, 2:10, 2:10] = masks[1, 12:20, 2:12] = masks[2, 2:12, 20:30] = True
    cands = Candidates(
        masks, np.array([0.9, 0.6, 0.3], np.float32), boxes_from_masks(masks), ["cell"] * 3, "text"
    )
    data = cands.to_label_image(first_id=1)
    table = cands.table(first_id=1, label_image=data)
    table.insert(0, "index", table["label"].to_numpy())
    result = viewer.add_labels(data, name="result", features=table)
    widget.segment_tab.review_btn.click()
    from napari_sam3._qt.review_panel import open_review_panel

    panel = open_review_panel(viewer)
    viewer.layers.selection.active = result
    assert panel.session is not None and panel.session.layer.name == "result"
    assert panel.model.rowCount() == 3
    result.selected_label = 2
    assert panel.view.selectionModel().selectedRows()[0].row() == 1  # synced with the layer
    panel.buttons["reject"].click()
    assert panel.session.status_of(2) == "rejected" and result.selected_label == 3
    panel.view.clicked.emit(panel.model.index(0, 0))  # a row click selects that object
    assert result.selected_label == 1
    panel.score_spin.setValue(0.5)
    panel.accept_above_btn.click()
    assert list(result.features.sort_values("label")["status"]) == [
        "accepted",
        "rejected",
        "unreviewed",
    ]
    panel.hide_check.setChecked(True)
    assert result.colormap.map(np.array([2]))[0][3] == 0
    assert "1 rejected" in panel.title.text()


def _cells(seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, (48, 64))
    yy, xx = np.mgrid[:48, :64]
    for cy, cx in [(12, 16), (30, 44), (24, 24)]:
        img[(yy - cy - seed) ** 2 + (xx - cx) ** 2 < 50] += 120
    return img.clip(0, 255).astype(np.uint8)


def test_use_these_exemplars_on_another_image(qtbot, sam3, video_checkpoint):
    from napari_sam3._napari import layers as L
    from napari_sam3.core.sam3.engine import Sam3Engine

    viewer, widget = sam3
    tab = widget.segment_tab
    tab.threshold_slider.setValue(10)
    a, b = _cells(0), _cells(3)
    viewer.add_image(a, name="A")
    viewer.add_image(b, name="B")
    tab.image_combo.setCurrentText("A")
    _, boxes = tab.add_prompt_layers()
    boxes.add([np.array([[4, 8], [4, 24], [20, 24], [20, 8]], float)], shape_type="rectangle")
    tab.exemplar_target_combo.setCurrentText("B")
    assert tab.exemplar_transfer_btn.isEnabled()
    tab.exemplar_transfer_btn.click()

    def result():  # result names lead with the prompt, then the image
        found = [
            ly for ly in viewer.layers if ly.name.startswith("exemplars from A") and "B" in ly.name
        ]
        return found[0] if found else None

    qtbot.waitUntil(lambda: result() is not None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = result()
    engine = Sam3Engine.load(str(video_checkpoint), device="cpu")
    raw = engine.segment_with(b, engine.exemplar_prompt(a, [[8, 4, 24, 20]]))
    expected = L.prepare_filtered(
        raw, tab.current_ref(viewer.layers["B"]), "x", tab.filter_settings()
    )
    assert len(layer.features) == len(expected.cands) > 0
    np.testing.assert_array_equal(layer.data, expected.data)
    assert set(layer.features["status"]) == {"unreviewed"}


def test_review_decisions_survive_refiltering(qtbot, sam3):
    from napari_sam3._napari.review_session import ReviewSession

    viewer, widget = sam3
    tab = widget.segment_tab
    tab.threshold_slider.setValue(10)
    viewer.add_image(_cells(1), name="cells")
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = tab.last_text.layer
    review = ReviewSession(layer)
    scores = layer.features.sort_values("label")["score"].to_numpy()
    assert len(scores) >= 3
    review.reject(2)  # the second best
    review.accept(len(scores))  # the worst
    tab.threshold_slider.setValue(int(np.floor(scores[-1] * 100)) + 1)  # drops the worst
    qtbot.waitUntil(lambda: len(layer.features) == len(scores) - 1, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    by_label = layer.features.set_index("label")["status"]
    assert by_label[2] == "rejected"
    assert (by_label.drop(2) == "unreviewed").all()
    assert 2 not in np.unique(layer.data)  # still out of the data after the re-filter
