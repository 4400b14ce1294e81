"""Adapting SAM3 in the widget, in a fresh process through the Plugins route (see test_journeys)."""

import pytest
import torch

from napari_sam3.core.sam3.adapter import Sam3Adapter
from napari_sam3.io.adapter_file import write_adapter

from .test_journeys import run_journey

pytestmark = pytest.mark.gui


@pytest.mark.slow
def test_adapt_journey(tiny_checkpoint, engine, tmp_path, monkeypatch):
    """Adapt to a hand-fixed result (verdict shown), then an adapter file in the Model section
    changes the next Count and Segment runs."""
    adapter = Sam3Adapter.new(engine.model.detector_model, rank=2)
    with torch.no_grad():
        for _, b in adapter.weights.values():
            b.normal_(0, 0.3)
    path = write_adapter(adapter, tmp_path / "made.sam3-adapter.safetensors")
    monkeypatch.setenv("JOURNEY_ADAPTER", str(path))
    run_journey("journey_adapt.py", tiny_checkpoint, tmp_path / "shots")
