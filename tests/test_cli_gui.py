"""`napari-sam3 gui --sample` opens a viewer with the sample and our dock widget (needs a display)."""

import os

import pytest

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (xvfb-run -a)"),
]


@pytest.mark.slow
def test_gui_opens_sample_and_widget(monkeypatch, capsys, qtbot):
    """The README's first command: sample + widget open on the Count tab; Count works offline."""
    napari = pytest.importorskip("napari")
    from napari_sam3.cli import main

    seen = {}

    def fake_run(*args, **kwargs):  # instead of the event loop: look, then close
        viewer = napari.current_viewer()
        seen["layers"] = [layer.name for layer in viewer.layers]
        seen["docks"] = list(viewer.window.dock_widgets.keys())
        widget = next(w for w in viewer.window.dock_widgets.values() if hasattr(w, "count_tab"))
        seen["on_count_tab"] = widget.tabs.currentWidget() is widget.count_tab
        widget.count_tab.count_btn.click()  # default counter: shipped nucleus network, no download
        # the centroid Points layer is appended one event-loop turn after the Labels layer
        qtbot.waitUntil(lambda: widget.idle and widget.count_tab.last is not None, timeout=60_000)
        seen["count"] = widget.count_tab.last.result.count
        seen["layers_after"] = [layer.name for layer in viewer.layers]
        widget.cleanup()
        viewer.close()

    monkeypatch.setattr(napari, "run", fake_run)
    assert main(["gui", "--sample"]) == 0
    assert len(seen["layers"]) == 1
    assert seen["on_count_tab"]
    assert seen["count"] > 50  # the sample holds well over a hundred nuclei
    assert len(seen["layers_after"]) == 3  # image + labels + centroid points
    assert any("SAM3" in name for name in seen["docks"])
    err = capsys.readouterr().err
    assert "hf auth login" in err and "NAPARI_SAM3_MODEL" in err
