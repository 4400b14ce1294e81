"""The Model section's adapter choice: the next Segment run uses it (real viewer, tiny checkpoint)."""

import numpy as np
import pytest
import torch

from napari_sam3._widget import Sam3Widget
from napari_sam3.core.sam3.adapter import Sam3Adapter
from napari_sam3.io.adapter_file import write_adapter

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


@pytest.fixture
def sam3(make_napari_viewer, tiny_checkpoint, engine):
    engine.set_adapter(None)
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    widget.segment_tab.threshold_slider.setValue(10)
    yield viewer, widget, engine
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)
    engine.set_adapter(None)


def _scores(qtbot, viewer, widget):
    tab = widget.segment_tab
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layers = [ly for ly in viewer.layers if ly.name.startswith("nucleus · cells")]
    assert layers, [ly.name for ly in viewer.layers]
    scores = np.sort(np.asarray(layers[-1].features["score"]))
    for ly in layers:  # the next run makes a fresh layer
        viewer.layers.remove(ly)
    return scores


def test_adapter_field_changes_the_next_runs(qtbot, sam3, tmp_path):
    viewer, widget, engine = sam3
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (64, 80)).astype(np.uint8), name="cells")
    widget.segment_tab.concepts_edit.setText("nucleus")
    base = _scores(qtbot, viewer, widget)
    adapter = Sam3Adapter.new(engine.model.detector_model, rank=2)
    with torch.no_grad():
        for _, b in adapter.weights.values():
            b.normal_(0, 0.3)
    path = write_adapter(adapter, tmp_path / "a.sam3-adapter.safetensors")

    widget.adapter_edit.setText(str(path))
    widget.adapter_edit.editingFinished.emit()
    adapted = _scores(qtbot, viewer, widget)
    assert engine.adapter is not None and engine.adapter.meta["file"] == str(path)
    assert base.shape != adapted.shape or not np.allclose(base, adapted)

    widget.adapter_edit.setText("")
    widget.adapter_edit.editingFinished.emit()
    again = _scores(qtbot, viewer, widget)
    assert engine.adapter is None
    np.testing.assert_allclose(again, base, rtol=1e-6)


def test_adapt_to_these_results(qtbot, sam3, tmp_path, monkeypatch):
    """Wiring only (the adaptation itself: test_session_features.py): the button's run reports
    in the status line, enables Save adapter, which writes the file the dialog names."""
    from napari_sam3._qt import adapt_action
    from napari_sam3.core.sam3.adapt import AdaptSettings

    viewer, widget, engine = sam3
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (64, 80)).astype(np.uint8), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    assert not tab.save_adapter_btn.isEnabled()
    assert adapt_action.start_adapt(tab, AdaptSettings("nucleus", steps=2)) is not None
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    adapted = tab.last_adapt
    assert adapted is not None and tab.status_label.text() == adapted.message
    assert tab.save_adapter_btn.isEnabled()
    out = str(tmp_path / "mine.sam3-adapter.safetensors")
    monkeypatch.setattr("napari_sam3._qt.tab_base.ask_save_path", lambda *a: out)
    tab.save_adapter_btn.click()
    back = Sam3Adapter.load(out, engine.model.detector_model)
    assert back.meta["concept"] == "nucleus" and tab.status_label.text().endswith(f"{out}.")
