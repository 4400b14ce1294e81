"""The Count tab in a real napari viewer (run under ``xvfb-run -a``)."""

import numpy as np
import pandas as pd
import pytest

from napari_sam3._widget import Sam3Widget
from napari_sam3.core.counting import count_objects
from napari_sam3.core.synthetic import synthetic_nuclei

pytestmark = pytest.mark.gui


@pytest.fixture
def counter(make_napari_viewer, tiny_checkpoint, engine):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    widget.tabs.setCurrentWidget(widget.count_tab)
    yield viewer, widget, engine
    widget.cleanup()
    widget.runner.wait(30)


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.idle, timeout=60_000)


def test_classical_count_layers_table_and_csv(qtbot, counter, tmp_path):
    viewer, widget, _ = counter
    image, truth = synthetic_nuclei((160, 160), seed=3)
    viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    tab = widget.count_tab
    tab.refresh_layer_choices()
    tab.diameter_spin.setValue(18)
    tab.run_count()
    _wait(qtbot, widget)
    expected = count_objects(image, diameter=18, scale=(0.5, 0.5))
    labels = viewer.layers["nuclei count (classical)"]
    points = viewer.layers["nuclei count (classical) centroids"]
    assert len(labels.features) == expected.count == len(points.data)
    assert f"Total: {expected.count} objects" in tab.count_label.text()
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))
    np.testing.assert_allclose(points.scale, (0.5, 0.5))
    assert tab.table_model.rowCount() == expected.count
    np.testing.assert_allclose(points.data[:, -2:], expected.table[["centroid_y", "centroid_x"]])
    out = tab.export_csv(str(tmp_path / "counts.csv"))
    table = pd.read_csv(out)
    assert len(table) == expected.count and "area_physical" in table


def test_sam3_count_per_concept_on_slice(qtbot, counter):
    viewer, widget, engine = counter
    stack = np.stack([synthetic_nuclei((96, 96), seed=s)[0] for s in range(3)])
    image = viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 1)
    tab = widget.count_tab
    tab.refresh_layer_choices()
    tab.method_combo.setCurrentText("sam3")
    tab.concepts_edit.setText("nucleus, cell")
    tab.diameter_spin.setValue(20)
    tab.run_count()
    _wait(qtbot, widget)
    layer = viewer.layers["stack count (sam3) [1]"]
    assert layer.data.shape == (1, 96, 96)
    np.testing.assert_allclose(layer.data_to_world((0, 5, 5)), image.data_to_world((1, 5, 5)))
    result = tab.last["result"]
    assert sum(result.counts.values()) == result.count
    for concept in result.counts:
        assert concept in tab.count_label.text()


def test_count_error_is_notified(qtbot, counter, monkeypatch):
    viewer, widget, _ = counter
    errors = []
    monkeypatch.setattr("napari_sam3._count_tab.notify_error", errors.append)
    monkeypatch.setattr("napari_sam3._tab_base.notify_error", errors.append)
    viewer.add_image(np.full((32, 32), np.nan), name="tiny")
    tab = widget.count_tab
    tab.refresh_layer_choices()
    tab.run_count()
    _wait(qtbot, widget)
    assert errors and tab.last is None
