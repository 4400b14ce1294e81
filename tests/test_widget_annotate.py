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


def test_propagate_buttons_run_the_session(qtbot, sam3):
    """Wiring only (the propagation itself: test_session_features.py): New object starts object
    2 on the prompt layers, Propagate adds the stack layer and says so in the status line."""
    viewer, widget = sam3
    tab = widget.segment_tab
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 48)).astype(np.uint8)
    viewer.add_image(stack, name="stack")
    tab.image_combo.setCurrentText("stack")
    viewer.dims.set_current_step(0, 1)
    clicks, boxes = tab.add_prompt_layers()
    clicks.add([[1, 17, 20]])
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)  # the click's own preview run
    tab.new_object_btn.click()  # the box belongs to object 2
    assert tab.status_label.text() == "Clicks and boxes now belong to object 2."
    boxes.add(
        [np.array([[1, 5, 30], [1, 5, 45], [1, 30, 45], [1, 30, 30]], float)],
        shape_type="rectangle",
    )
    tab.propagate_btn.click()
    name = "SAM3 objects: stack"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = viewer.layers[name]
    assert layer.data.shape == stack.shape and layer.features["label"].tolist() == [1, 2]
    assert tab.status_label.text().startswith("Propagated 2 object(s) through 3 slices")


def test_propagate_without_clicks_is_refused(sam3, monkeypatch):
    from napari_sam3._qt import propagate_action

    viewer, widget = sam3
    tab = widget.segment_tab
    errors = []
    monkeypatch.setattr(propagate_action, "notify_error", errors.append)
    viewer.add_image(np.zeros((3, 20, 20), np.uint8), name="stack")
    tab.image_combo.setCurrentText("stack")
    assert tab.propagate_btn.isEnabled()
    tab.propagate_btn.click()
    assert "Click on (or draw a box around) the objects" in str(errors[-1])
    assert widget.idle and "SAM3 objects: stack" not in viewer.layers


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
    session = panel.session
    assert panel.attach(viewer.layers["result"]) is session and session.hiding
    viewer.layers.remove(result)  # its session goes with it
    assert panel.session is None


def test_use_these_exemplars_on_another_image(qtbot, sam3):
    """Wiring only (the run and its re-filter: test_session_features.py): the button searches the
    chosen target with this image's boxes; the result is the one the tab's controls drive."""
    viewer, widget = sam3
    tab = widget.segment_tab
    tab.threshold_slider.setValue(10)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (48, 64)).astype(np.uint8), name="A")
    viewer.add_image(rng.integers(0, 255, (48, 64)).astype(np.uint8), name="B")
    tab.image_combo.setCurrentText("A")
    _, boxes = tab.add_prompt_layers()
    boxes.add([np.array([[4, 8], [4, 24], [20, 24], [20, 8]], float)], shape_type="rectangle")
    tab.exemplar_target_combo.setCurrentText("B")
    assert tab.exemplar_transfer_btn.isEnabled()
    tab.exemplar_transfer_btn.click()
    name = "exemplars from A · B"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    assert tab.last_text.layer is viewer.layers[name] and tab.last_text.image.name == "B"
    assert f"'{name}'" in tab.driven_label.text()
