"""A tiled SAM3 count runs each tile through the same engine path as a plain encode + prompt:
the CPU fast path, the feature cache, all concepts in one detector call, no tracker neck."""

import pytest
import torch

from napari_sam3.core.counting.count import count_objects
from napari_sam3.core.counting.tiling import tile_grid
from napari_sam3.core.images import to_model_rgb
from napari_sam3.core.sam3.acceleration import encode_vision
from napari_sam3.core.sam3.engine import Sam3Engine
from napari_sam3.core.sam3.loading import load_model
from napari_sam3.core.synthetic import synthetic_nuclei


@pytest.fixture
def bf16_engine(tiny_checkpoint, monkeypatch):
    """An engine in the CPU ``bf16`` mode on the shared tiny model (the fixture engine is float32;
    the mode leaves the model's weights alone, so both can share it)."""
    monkeypatch.setenv("NAPARI_SAM3_CPU_FAST", "bf16")
    engine = Sam3Engine(load_model(str(tiny_checkpoint), device="cpu"))
    assert engine.cpu_fast_path == "bf16" and engine.model_key.endswith("|cpu-bf16")
    return engine


@pytest.mark.slow
def test_each_tile_is_one_fast_path_encode_like_a_plain_one(bf16_engine):
    engine = bf16_engine
    img, _ = synthetic_nuclei((224, 224), seed=5)
    res = count_objects(img, "sam3", prompt="nucleus, cell", engine=engine, tile=128, min_score=0.9)
    n = res.meta["tiles"]
    assert n == 4 and res.meta["resplit_tiles"] == 0
    # one backbone pass per tile, both concepts in one detector call, text encoded once
    assert engine.stats["vision_encodes"] == n
    assert engine.stats["detector_calls"] == n
    assert engine.stats["text_encodes"] == 2
    detector = engine.model.detector_model
    for t in tile_grid(img.shape, res.meta["tile_size"], res.meta["overlap"]):
        crop = img[t.slices]
        hits = engine.stats["cache_hits"]
        encoded = engine.encode(crop)  # a plain encode of the tile: the count's entry, reused
        assert engine.stats["cache_hits"] == hits + 1
        assert engine.stats["vision_encodes"] == n
        assert encoded.model_key == engine.model_key
        assert encoded.tracker_video is None  # tiles are never clicked: no tracker neck
        # the features are the bf16 fast path's, not float32 ones
        pixels = engine.pixel_values(to_model_rgb(crop))
        with torch.inference_mode():
            fast = encode_vision(detector, pixels, "bf16").fpn_hidden_states[-1]
            slow = encode_vision(detector, pixels, "off").fpn_hidden_states[-1]
        got = encoded.vision.fpn_hidden_states[-1]
        assert got.dtype == torch.float32
        assert torch.equal(got, fast)
        assert not torch.equal(got, slow)
