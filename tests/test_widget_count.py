"""The Count tab in a real napari viewer (run under ``xvfb-run -a``)."""

import numpy as np
import pandas as pd
import pytest

from napari_sam3._widget import Sam3Widget
from napari_sam3.core.counting.count import count_objects, count_stack
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
    assert tab.method_combo.currentText() == "learned"  # the default
    tab.method_combo.setCurrentText("classical")
    tab.diameter_spin.setValue(18)
    tab.run_count()
    _wait(qtbot, widget)
    expected = count_objects(image, "classical", diameter=18, scale=(0.5, 0.5))
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
    result = tab.last.result
    assert sum(result.counts.values()) == result.count
    for concept in result.counts:
        assert concept in tab.count_label.text()


def test_count_error_is_notified(qtbot, counter, monkeypatch):
    viewer, widget, _ = counter
    errors = []
    monkeypatch.setattr("napari_sam3._qt.count_tab.notify_error", errors.append)
    monkeypatch.setattr("napari_sam3._qt.tab_base.notify_error", errors.append)
    viewer.add_image(np.full((32, 32), np.nan), name="tiny")
    tab = widget.count_tab
    tab.refresh_layer_choices()
    tab.run_count()
    _wait(qtbot, widget)
    assert errors and tab.last is None


def test_classical_count_all_slices(qtbot, counter, tmp_path):
    viewer, widget, _ = counter
    planes = [synthetic_nuclei((128, 128), seed=k)[0] for k in range(3)]
    stack = np.stack(planes)
    viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5), translate=(1.0, 0.0, 0.0))
    viewer.add_image(planes[0], name="flat")
    tab = widget.count_tab
    tab.refresh_layer_choices()
    tab.image_combo.setCurrentText("flat")
    assert not tab.all_slices_check.isEnabled()  # a single plane has no slices
    tab.image_combo.setCurrentText("stack")
    assert tab.all_slices_check.isEnabled()
    tab.all_slices_check.setChecked(True)
    tab.method_combo.setCurrentText("classical")
    tab.run_count()
    qtbot.waitUntil(lambda: widget.idle and tab.last is not None, timeout=60_000)
    # ONE diameter for the whole stack (as count_stack and the CLI), not one per slice
    expected = count_stack(stack, "classical", scale=(0.5, 0.5)).plane_counts
    out = tab.last
    assert out.slice_counts == expected
    assert f"Total {sum(expected)} objects in 3 slices" in tab.count_label.text()
    assert "per slice: " + ", ".join(map(str, expected)) in tab.count_label.text()
    labels = viewer.layers["stack count (classical) all slices"]
    points = viewer.layers["stack count (classical) all slices centroids"]
    assert labels.data.shape == stack.shape
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(labels.translate, (1.0, 0.0, 0.0))
    ids = [set(np.unique(labels.data[k])) - {0} for k in range(3)]
    assert [len(i) for i in ids] == expected
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    features = labels.features
    assert set(features["index"]) == set().union(*ids)
    assert "slice" in features and features["slice"].nunique() == 3
    assert features.groupby("slice").size().tolist() == expected
    for k in range(3):  # each id's row says its slice
        rows = features[features["index"].isin(ids[k])]
        assert (rows["slice"] == k).all() and len(rows) == expected[k]
    assert points.data.shape == (sum(expected), 3)
    np.testing.assert_array_equal(points.data[:, 0], features["slice"].to_numpy())
    assert tab.table_model.rowCount() == sum(expected)
    assert "slice" in list(tab.table_model.df.columns)
    table = pd.read_csv(tab.export_csv(str(tmp_path / "stack.csv")))
    assert len(table) == sum(expected) and table["slice"].nunique() == 3


def test_all_slices_unchecked_counts_current_slice(qtbot, counter):
    viewer, widget, _ = counter
    stack = np.stack([synthetic_nuclei((96, 96), seed=k)[0] for k in range(2)])
    viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 1)
    tab = widget.count_tab
    tab.refresh_layer_choices()
    assert tab.all_slices_check.isEnabled() and not tab.all_slices_check.isChecked()
    tab.run_count()
    qtbot.waitUntil(lambda: widget.idle and tab.last is not None, timeout=60_000)
    layer = viewer.layers["stack count (learned) [1]"]  # the default counter
    assert layer.data.shape == (1, 96, 96)
    assert tab.last.result.count == count_objects(stack[1]).count


def test_the_count_controls_start_at_the_request_defaults(make_napari_viewer):
    """The Count tab shows the defaults `napari-sam3 count --help` prints: both are
    `core.requests.CountRequest`'s (the CLI's flags left out give the same request)."""
    from dataclasses import fields

    from napari_sam3.cli import build_parser, settings_from_args
    from napari_sam3.core.requests import CountRequest

    widget = Sam3Widget(make_napari_viewer())
    try:
        shown = widget.count_tab.request()
    finally:
        widget.cleanup()
    args = build_parser().parse_args(["count", "a.tif", "--out", "o"])
    cli = settings_from_args(args).count_request()
    core = [f.name for f in fields(CountRequest)]
    assert {k: getattr(shown, k) for k in core} == {k: getattr(cli, k) for k in core}
    assert {k: getattr(cli, k) for k in core} == {k: getattr(CountRequest(), k) for k in core}
