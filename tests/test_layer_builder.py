"""Result layers built in the worker and added one per event-loop turn (a real napari viewer)."""

import threading

import numpy as np
import pytest
from napari.layers import Labels, Points

from napari_sam3._napari import layer_builder as B
from napari_sam3._qt.worker import next_turn
from napari_sam3._widget import Sam3Widget

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def _image(shape=(64, 80), seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, shape)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    for cy, cx in [(16, 20), (40, 55), (30, 30)]:
        img[..., (yy - cy) ** 2 + (xx - cx) ** 2 < 60] += 120
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture
def widget(make_napari_viewer, tiny_checkpoint, engine):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    widget.segment_tab.threshold_slider.setValue(10)  # the random tiny model scores about 0.25
    yield widget
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)


@pytest.fixture
def built_in(monkeypatch):
    """Records the thread each result Labels / Points layer is constructed in."""
    threads = []
    for name in ("labels_layer", "points_layer"):
        original = getattr(B, name)

        def record(data, kwargs, original=original):
            threads.append(threading.current_thread())
            return original(data, kwargs)

        monkeypatch.setattr(B, name, record)
    return threads


def test_text_result_layers_are_built_off_the_main_thread(qtbot, widget, built_in):
    viewer = widget.viewer
    viewer.add_image(_image(), name="cells")
    tab = widget.segment_tab
    tab.hidden_check.setChecked(True)
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = tab.last_text.layer
    assert layer in viewer.layers and len(layer.features) > 0
    assert f"{layer.name} (hidden)" in viewer.layers
    # the result layer right above the image, its hidden-objects layer (next turn) above that
    names = [ly.name for ly in viewer.layers]
    assert names.index(f"{layer.name} (hidden)") == names.index(layer.name) + 1
    assert len(built_in) == 2
    assert all(t is not threading.main_thread() for t in built_in)


def test_count_layers_are_built_off_the_main_thread(qtbot, widget, built_in):
    viewer = widget.viewer
    viewer.add_image(_image(seed=3), name="cells")
    tab = widget.count_tab
    tab.method_combo.setCurrentText("classical")
    tab.run_count()
    qtbot.waitUntil(lambda: widget.idle and tab.last is not None, timeout=TIMEOUT)
    labels, points = tab.last.labels_layer, tab.last.points_layer
    assert isinstance(labels, Labels) and isinstance(points, Points)
    assert labels in viewer.layers and points in viewer.layers
    assert points.name == f"{labels.name} centroids"
    assert len(points.data) == len(labels.features) == tab.last.result.count
    assert len(built_in) == 2
    assert all(t is not threading.main_thread() for t in built_in)


def test_adder_appends_one_layer_per_event_loop_turn(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    adder = B.LayerAdder(viewer, next_turn)
    first, second, dropped, third = (
        Labels(np.zeros((4, 4), np.uint8), name=n) for n in ("first", "second", "dropped", "third")
    )
    adder.add(first, second)
    adder.add(dropped, when=lambda: False)
    adder.add(third)
    assert first in viewer.layers and second not in viewer.layers  # the rest wait for a turn
    assert adder.alive(second) and not adder.idle
    adder.discard(third)
    qtbot.waitUntil(lambda: adder.idle, timeout=5000)
    assert [ly.name for ly in viewer.layers] == ["first", "second"]
    adder.close()
    adder.add(third)
    assert third not in viewer.layers


def test_set_changed_geometry_sets_only_what_differs(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((8, 8), np.uint8), scale=(2, 3))
    seen = []
    layer.events.scale.connect(lambda e: seen.append("scale"))
    layer.events.translate.connect(lambda e: seen.append("translate"))
    same = {
        "scale": np.array([2.0, 3.0]),
        "translate": np.zeros(2),
        "rotate": np.eye(2),
        "shear": np.zeros(1),
        "affine": np.eye(3),
    }
    B.set_changed_geometry(layer, same)
    assert seen == []
    B.set_changed_geometry(layer, {**same, "translate": np.array([5.0, 1.0])})
    assert seen == ["translate"]
    np.testing.assert_allclose(layer.translate, (5, 1))
