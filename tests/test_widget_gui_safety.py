"""Issue 19 GUI wiring on the Plugins route: status lines never go stale, Commit-into choices."""

import numpy as np
import pytest

TIMEOUT = 60_000


@pytest.fixture
def plugin(make_napari_viewer, tiny_model_env):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam3", "SAM3")
    widget.device_combo.setCurrentText("cpu")
    yield viewer, widget
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)


def _cells(shape=(64, 80)):
    rng = np.random.default_rng(0)
    return rng.normal(40, 8, shape).clip(0, 255).astype(np.uint8)


@pytest.mark.slow
def test_removing_the_image_mid_run_cancels_it_and_says_so(qtbot, plugin):
    viewer, widget = plugin
    tab = widget.segment_tab
    image = viewer.add_image(_cells(), name="cells")
    tab.concepts_edit.setText("nucleus")
    job = tab.run_text()
    assert job is not None and not job.done  # loading the model: running
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    assert job.state == "aborted"
    assert tab.status_label.text().startswith("Cancelled: the image 'cells' was removed")
    assert [ly.name for ly in viewer.layers] == []


@pytest.mark.slow
def test_an_error_line_goes_when_the_model_loads_and_targets_are_honest(qtbot, plugin, tmp_path):
    viewer, widget = plugin
    tab = widget.segment_tab
    viewer.add_image(_cells(), name="cells")
    good = widget.model_edit.text()
    widget.model_edit.setText(str(tmp_path / "no-such-model"))
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    failed = tab.status_label.text()
    assert "no-such-model" in failed or "model" in failed.lower()
    # the Model section at the top says why too (the tab's line may be scrolled out of view)
    assert widget.model_status.text().startswith("Model not loaded: ")
    assert "first run" not in widget.model_status.text()
    widget.model_edit.setText(good)
    widget.load_model()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    assert tab.status_label.text() != failed  # the fixed error is not shown any more
    assert widget.model_status.text().startswith("Loaded")
    tab.add_prompt_layers()  # makes the "SAM3 candidate" preview layer
    choices = [tab.target_combo.itemText(i) for i in range(tab.target_combo.count())]
    assert "SAM3 candidate" in viewer.layers and "SAM3 candidate" not in choices
    assert choices[0] == "New layer: cells annotations"
