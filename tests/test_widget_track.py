"""The Segment tab's "Track through slices" in a real napari viewer (run under ``xvfb-run -a``)."""

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
    """(viewer, widget): widget docked, model field = the video-capable tiny checkpoint, cpu."""
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(video_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    yield viewer, widget
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)


def _stack(frames=3, shape=(40, 48)):
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (frames, *shape)).astype(np.uint8)


def test_track_button_follows_the_image(sam3):
    viewer, widget = sam3
    tab = widget.segment_tab
    viewer.add_image(_stack()[0], name="plane")
    assert not tab.track_btn.isEnabled()
    viewer.add_image(_stack(), name="stack")
    tab.image_combo.setCurrentText("stack")
    assert tab.track_btn.isEnabled()


@pytest.mark.slow
def test_track_through_slices_makes_one_stack_layer(qtbot, sam3, video_checkpoint):
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.tracking.stack_tracking import track_stack

    viewer, widget = sam3
    tab = widget.segment_tab
    stack = _stack()
    image = viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5))
    tab.image_combo.setCurrentText("stack")
    tab.concepts_edit.setText("nucleus")
    tab.threshold_slider.setValue(10)
    viewer.dims.set_current_step(0, 1)  # tracking starts on the slice in view
    assert tab.run_track() is not None
    qtbot.waitUntil(lambda: "SAM3 track: nucleus" in viewer.layers, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    layer = viewer.layers["SAM3 track: nucleus"]
    assert layer.data.shape == stack.shape
    np.testing.assert_allclose(layer.scale, image.scale)
    # same result as the core API on the same engine
    engine = Sam3Engine.load(str(video_checkpoint), device="cpu")
    expected = track_stack(engine, stack, "nucleus", min_score=0.1, start=1)
    assert expected.meta["start"] == 1
    np.testing.assert_array_equal(layer.data, expected.labels)
    table = layer.metadata["sam3_track_table"]
    assert len(table) == len(expected.table) > 0
    features = layer.features
    assert list(features["index"]) == sorted(table["label"].unique())
    assert (features["frames"] == table.groupby("label")["frame"].nunique().values).all()
    assert "Tracked" in tab.status_label.text()


def test_track_on_a_single_plane_is_refused(sam3):
    viewer, widget = sam3
    tab = widget.segment_tab
    viewer.add_image(_stack()[0], name="plane")
    tab.concepts_edit.setText("nucleus")
    assert tab.run_track() is None
