"""A screenshot of napari with the SAM3 widget docked (README image). Run under ``xvfb-run -a``.

The image always goes to the test's temporary folder; it is copied to ``docs/screenshot.png`` when that
file is missing or ``NAPARI_SAM3_UPDATE_SCREENSHOT=1`` is set. The masks come from the tiny random test
model, so they show the layout, not SAM3's accuracy.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_sam3._widget import Sam3Widget
from napari_sam3.core.synthetic import synthetic_nuclei

pytestmark = pytest.mark.gui

DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"


def test_screenshot_with_widget_docked(
    make_napari_viewer, qtbot, tiny_checkpoint, engine, tmp_path
):
    import imageio.v3 as iio

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    image, _ = synthetic_nuclei((256, 256), seed=1)
    viewer.add_image(image, name="nuclei", colormap="gray")
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3", area="right")
    tab = widget.segment_tab
    tab.threshold_slider.setValue(20)
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    qtbot.waitUntil(lambda: widget.idle, timeout=60_000)
    clicks, _ = tab.add_prompt_layers()
    clicks.add([128, 128])
    qtbot.waitUntil(lambda: tab.last_clicks is not None, timeout=60_000)
    qtbot.waitUntil(lambda: widget.idle, timeout=60_000)
    viewer.reset_view()
    qtbot.wait(300)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 400 and shot.shape[1] > 800
    assert np.ptp(shot[..., :3]) > 0
    out = tmp_path / "screenshot.png"
    iio.imwrite(out, shot)
    if not DOCS.exists() or os.environ.get("NAPARI_SAM3_UPDATE_SCREENSHOT") == "1":
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, DOCS)
    widget.cleanup()


def test_count_tab_screenshot_on_the_sample(make_napari_viewer, qtbot, tmp_path):
    """The first minute with no download: the offline sample counted by the default counter."""
    import imageio.v3 as iio

    from napari_sam3._sample_data import make_nuclei_sample

    docs = DOCS.with_name("screenshot_count.png")
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    for data, kwargs, _kind in make_nuclei_sample():
        viewer.add_image(data, **kwargs)
    widget = Sam3Widget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM3", area="right")
    widget.tabs.setCurrentWidget(widget.count_tab)
    widget.count_tab.count_btn.click()
    qtbot.waitUntil(lambda: widget.idle and widget.count_tab.last is not None, timeout=60_000)
    count = widget.count_tab.last.result.count
    assert str(count) in widget.count_tab.count_label.text()
    viewer.reset_view()
    qtbot.wait(300)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = tmp_path / "screenshot_count.png"
    iio.imwrite(out, shot)
    if not docs.exists() or os.environ.get("NAPARI_SAM3_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(out, docs)
    widget.cleanup()
