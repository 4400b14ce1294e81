"""`napari-sam3 gui --sample` opens a viewer with the sample and our dock widget (needs a display)."""

import os

import pytest

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (xvfb-run -a)"),
]


def test_gui_opens_sample_and_widget(monkeypatch, capsys):
    napari = pytest.importorskip("napari")
    from napari_sam3.cli import main

    seen = {}

    def fake_run(*args, **kwargs):  # instead of the event loop: look, then close
        viewer = napari.current_viewer()
        seen["layers"] = [layer.name for layer in viewer.layers]
        seen["docks"] = list(viewer.window.dock_widgets.keys())
        viewer.close()

    monkeypatch.setattr(napari, "run", fake_run)
    assert main(["gui", "--sample"]) == 0
    assert len(seen["layers"]) == 1
    assert any("SAM3" in name for name in seen["docks"])
    err = capsys.readouterr().err
    assert "hf auth login" in err and "NAPARI_SAM3_MODEL" in err
