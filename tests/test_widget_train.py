"""The Count tab's "Train on these labels" in a real napari viewer (run under ``xvfb-run -a``)."""

import numpy as np
import pytest
import torch

from napari_sam3._widget import Sam3Widget
from napari_sam3.core.learned.model_file import WIDTHS
from napari_sam3.core.learned.network import NucleusNet
from napari_sam3.core.learned.training import iter_train, prepare_plane
from napari_sam3.core.progress import run_to_end
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io.network_file import save_network

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def tab(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM3")
    widget.tabs.setCurrentWidget(widget.count_tab)
    yield viewer, widget, widget.count_tab
    widget.cleanup()
    widget.runner.wait(30)


def test_train_on_painted_labels_selects_the_better_network(qtbot, tab, tmp_path):
    viewer, widget, tab = tab
    torch.manual_seed(0)
    base = NucleusNet(WIDTHS)  # a deliberately bad base: 10 steps from scratch
    img0, lab0 = synthetic_nuclei((160, 160), seed=0, diameter=14)
    run_to_end(iter_train(base, prepare_plane("s", "s", img0, lab0, 14.0), 10, batch_size=4))
    base_path = tmp_path / "bad.safetensors"
    save_network(base, base_path, {})
    images = [synthetic_nuclei((160, 160), seed=s, diameter=14) for s in (1, 2, 3)]
    stack = np.stack([i for i, _ in images])
    viewer.add_image(stack, name="nuclei")
    painted = viewer.add_labels(np.stack([lb for _, lb in images]).astype(np.int32), name="mine")
    out = tmp_path / "mine.safetensors"
    tab.train_session.run([painted], out, steps=60, base=base_path)
    qtbot.waitUntil(lambda: widget.idle, timeout=300_000)
    result = tab.train_session.last
    assert result is not None and result.better and out.is_file()
    assert "held-out objects:" in tab.train_label.text()
    assert tab.method_combo.currentData() == str(out)
    assert tab.method_combo.currentText() == "learned: mine"
    # counting now uses the new network
    viewer.dims.set_point(0, 1)
    tab.refresh_layer_choices()
    tab.run_count()
    qtbot.waitUntil(lambda: widget.idle, timeout=120_000)
    counted = tab.last
    n_true = len(np.unique(images[1][1])) - 1
    assert abs(counted.count - n_true) < 0.25 * n_true


def test_the_steps_box_reaches_the_run_and_shows_the_time(qtbot, tab, tmp_path):
    from napari_sam3.core.defaults import FINETUNE_STEPS
    from napari_sam3.core.learned.model_file import read_metadata

    viewer, widget, tab = tab
    spin = tab.train_steps_spin
    assert spin.value() == FINETUNE_STEPS and "min" in spin.suffix()  # 200 steps: minutes
    spin.setValue(3)
    assert " s)" in spin.suffix() and "3 steps take about" in spin.toolTip()
    img, lab = synthetic_nuclei((128, 128), seed=3, diameter=14)
    viewer.add_image(img, name="cells")
    painted = viewer.add_labels(lab.astype(np.int32), name="mine")
    out = tmp_path / "three.safetensors"
    assert tab.train_on_labels([painted], str(out)) is not None
    assert "3 steps, about" in tab.status_label.text()  # the time estimate while it runs
    qtbot.waitUntil(lambda: widget.idle, timeout=300_000)
    assert tab.train_session.last.steps == 3 and read_metadata(out)["steps"] == "3"
    assert tab.status_label.text().startswith("Trained 3 steps")


def test_train_without_labels_says_what_to_do(qtbot, tab, tmp_path, monkeypatch):
    viewer, widget, tab = tab
    errors = []
    monkeypatch.setattr("napari_sam3._qt.count_tab.notify_error", errors.append)
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    empty = viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    assert tab.train_on_labels([empty], str(tmp_path / "x.safetensors")) is None
    assert "no objects" in str(errors[-1])
    viewer.layers.selection.clear()
    assert tab.train_on_labels(path=str(tmp_path / "x.safetensors")) is None
    assert "Select the corrected Labels" in str(errors[-1])
    assert not (tmp_path / "x.safetensors").exists()
