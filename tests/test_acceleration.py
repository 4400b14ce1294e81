"""core.acceleration: mode resolution, and the bf16 / compiled encoder paths on the tiny model."""

import copy

import pytest
import torch

from napari_sam3.core.sam3 import acceleration as acc


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _features(vision):
    return [vision.last_hidden_state, *vision.fpn_hidden_states]


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    from transformers import Sam3Model

    return Sam3Model.from_pretrained(str(tiny_checkpoint)).eval()


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, 224, 224, generator=g)


def test_resolve_mode_explicit_and_devices(monkeypatch):
    monkeypatch.delenv(acc.ENV_MODE, raising=False)
    assert acc.resolve_mode("cpu", "off") == "off"
    assert acc.resolve_mode("cpu", "bf16") == "bf16"
    assert acc.resolve_mode(torch.device("cpu"), "bf16-compile") == "bf16-compile"
    # other devices: the loader picks their dtype, the CPU fast path never applies
    assert acc.resolve_mode("cuda", "bf16") == "off"
    assert acc.resolve_mode("cuda:0", "auto") == "off"
    assert acc.resolve_mode("mps", "bf16") == "off"
    with pytest.raises(ValueError, match="Unknown CPU fast-path mode"):
        acc.resolve_mode("cpu", "int8")


def test_auto_follows_the_cpu_and_the_environment(monkeypatch):
    monkeypatch.delenv(acc.ENV_MODE, raising=False)
    monkeypatch.setattr(acc, "cpu_has_native_bf16", lambda: True)
    assert acc.resolve_mode("cpu") == "bf16"
    assert acc.resolve_mode("cpu", None) == "bf16"
    monkeypatch.setattr(acc, "cpu_has_native_bf16", lambda: False)
    assert acc.resolve_mode("cpu") == "off"  # emulated bf16 would be slower than float32
    monkeypatch.setenv(acc.ENV_MODE, "bf16")
    assert acc.resolve_mode("cpu", "auto") == "bf16"
    assert acc.resolve_mode("cpu", "off") == "off"  # an explicit mode wins over the environment
    monkeypatch.setenv(acc.ENV_MODE, "nonsense")
    with pytest.raises(ValueError):
        acc.resolve_mode("cpu")


def test_cpu_flag_probe_returns_bool():
    assert isinstance(acc.cpu_has_native_bf16(), bool)


def test_off_is_exactly_the_transformers_call(detector, pixels):
    with torch.inference_mode():
        ref = detector.get_vision_features(pixel_values=pixels)
        got = acc.encode_vision(detector, pixels, "off")
    for a, b in zip(_features(got), _features(ref), strict=True):
        assert torch.equal(a, b)


def test_bf16_features_are_float32_and_close(detector, pixels):
    with torch.inference_mode():
        ref = detector.get_vision_features(pixel_values=pixels)
        got = acc.encode_vision(detector, pixels, "bf16")
    for a, b in zip(_features(got), _features(ref), strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert _rel(a, b) < 0.03
    assert all(t.dtype == torch.float32 for t in got.fpn_position_encoding)
    # the float32 heads accept them unchanged
    ids = torch.tensor([[512] + [1] * 5 + [513] * 26])
    mask = torch.zeros_like(ids)
    mask[0, :7] = 1
    with torch.inference_mode():
        out = detector(vision_embeds=got, input_ids=ids, attention_mask=mask)
        ref_out = detector(vision_embeds=ref, input_ids=ids, attention_mask=mask)
    assert out.pred_masks.dtype == torch.float32
    assert _rel(out.pred_logits, ref_out.pred_logits) < 0.05


def test_vision_autocast_context(pixels):
    with acc.vision_autocast("cpu", "bf16") as mode:
        assert mode == "bf16"
        assert torch.is_autocast_enabled("cpu")
        assert torch.matmul(pixels[0, 0], pixels[0, 0]).dtype == torch.bfloat16
    with acc.vision_autocast("cpu", "off") as mode:
        assert mode == "off"
        assert not torch.is_autocast_enabled("cpu")


def test_cast_features_casts_every_level(detector, pixels):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        vision = detector.get_vision_features(pixel_values=pixels)
    assert any(t.dtype == torch.bfloat16 for t in vision.fpn_hidden_states)
    acc.cast_features(vision, torch.float32)
    assert all(t.dtype == torch.float32 for t in _features(vision))
    assert all(t.dtype == torch.float32 for t in vision.fpn_position_encoding)


def test_apply_cpu_fast_path_leaves_the_model_alone_except_compile(detector, monkeypatch):
    monkeypatch.delenv(acc.ENV_MODE, raising=False)
    assert acc.apply_cpu_fast_path(detector, "bf16") == "bf16"
    assert acc.apply_cpu_fast_path(detector, "off") == "off"
    layers = detector.vision_encoder.backbone.layers
    assert all("forward" not in vars(layer) for layer in layers)


def test_compile_vision_layers_rejects_other_backbones():
    assert acc.compile_vision_layers(torch.nn.Linear(2, 2)) is False


@pytest.mark.slow
def test_compiled_layers_match_bf16(detector, pixels):
    """Two shared graphs for all layers; numerically the bf16 path (a copy: the fixture stays)."""
    model = copy.deepcopy(detector)
    with torch.inference_mode():
        ref = acc.encode_vision(detector, pixels, "bf16")
        got = acc.encode_vision(model, pixels, "bf16-compile")
        again = acc.encode_vision(model, pixels, "bf16-compile")
    assert acc.compile_vision_layers(model.vision_encoder) is True  # idempotent
    backbone = model.vision_encoder.backbone
    assert all("forward" in vars(layer) for layer in backbone.layers)
    for a, b, c in zip(_features(got), _features(ref), _features(again), strict=True):
        assert a.dtype == torch.float32
        assert _rel(a, b) < 0.03
        assert torch.equal(a, c)


def test_engine_uses_the_fast_path_when_asked(tiny_checkpoint, engine, monkeypatch):
    """Engine integration: NAPARI_SAM3_CPU_FAST=bf16 gives an engine whose text results agree
    with the float32 engine (the shared fixture runs with the fast path off)."""
    import numpy as np

    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.sam3.loading import load_model

    if not hasattr(engine, "cpu_fast_path"):
        pytest.skip("engine not integrated with core.acceleration yet")
    monkeypatch.setenv(acc.ENV_MODE, "bf16")
    fast = Sam3Engine(load_model(str(tiny_checkpoint), device="cpu"))
    assert fast.cpu_fast_path == "bf16"
    assert fast.model_key != engine.model_key  # cached features never mix between the modes
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    ref = engine.segment_text(plane, "nucleus", min_score=0.0)
    got = fast.segment_text(plane, "nucleus", min_score=0.0)
    assert len(got) == len(ref)
    np.testing.assert_allclose(np.sort(got.scores), np.sort(ref.scores), atol=0.02)
    assert fast.stats["vision_encodes"] == 1
    # the exemplar path (boxes) also runs under the bf16 heads
    box = np.array([[40.0, 30.0, 90.0, 80.0]])
    ref_ex = engine.segment_exemplars(plane, box, [1], min_score=0.0)
    got_ex = fast.segment_exemplars(plane, box, [1], min_score=0.0)
    assert got_ex.masks.dtype == bool and got_ex.scores.dtype == ref_ex.scores.dtype
    np.testing.assert_allclose(np.sort(got_ex.scores), np.sort(ref_ex.scores), atol=0.02)


def test_heads_autocast_only_in_head_modes(pixels):
    for mode, expected in [("bf16", True), ("bf16-compile", True), ("bf16-vision", False)]:
        with acc.heads_autocast("cpu", mode) as resolved:
            assert resolved == mode
            assert torch.is_autocast_enabled("cpu") is expected
    with acc.heads_autocast("cpu", "off"):
        assert not torch.is_autocast_enabled("cpu")
    with acc.heads_autocast("cuda", "bf16") as resolved:  # GPUs choose their dtype at load time
        assert resolved == "off" and not torch.is_autocast_enabled("cpu")


def test_bf16_heads_agree_with_float32_heads(detector, pixels):
    """Same float32 features, heads under heads_autocast vs plain: close scores and masks."""
    ids = torch.tensor([[512] + [1] * 5 + [513] * 26])
    mask = torch.zeros_like(ids)
    mask[0, :7] = 1
    with torch.inference_mode():
        vision = acc.encode_vision(detector, pixels, "off")
        ref = detector(vision_embeds=vision, input_ids=ids, attention_mask=mask)
        with acc.heads_autocast("cpu", "bf16"):
            got = detector(vision_embeds=vision, input_ids=ids, attention_mask=mask)
        with acc.heads_autocast("cpu", "bf16-vision"):
            same = detector(vision_embeds=vision, input_ids=ids, attention_mask=mask)
    assert got.pred_masks.dtype == torch.bfloat16  # really ran in bf16
    assert torch.equal(same.pred_masks, ref.pred_masks)  # bf16-vision leaves the heads alone
    score = lambda o: o.pred_logits.float().sigmoid() * o.presence_logits.float().sigmoid()  # noqa: E731
    assert (score(got) - score(ref)).abs().max() < 0.02
    assert _rel(got.pred_masks, ref.pred_masks) < 0.05
    agree = ((got.pred_masks.float() > 0) == (ref.pred_masks > 0)).float().mean()
    assert agree > 0.98
