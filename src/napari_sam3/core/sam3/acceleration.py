"""Faster CPU inference: bfloat16 autocast (and optionally compiled layers) for backbone and heads.

The SAM3 vision encoder (a 32-layer ViT-L at 1008 px plus an FPN neck) is ~90 % of the CPU time of
a first prompt; the detector heads (text encoder, DETR encoder/decoder, mask head) are what every
further concept costs. Measured on the full-size architecture (``benchmarks/README.md``):

* ``"bf16"``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around ``get_vision_features`` and
  around the detector heads (`heads_autocast`); the vision features are cast back to the model
  dtype before they are cached and the heads' outputs are read as float32, so scores, masks and
  the tracker (clicks, float32 throughout) see float32 tensors. Vision encoder ~0.6x the float32
  time with < 1 % relative feature error; heads ~0.75x with 0.5 % mask-logit error and top-10
  mask IoU 0.9999 against float32 heads on the same features. Needs a CPU with native bfloat16
  dot products (``avx512_bf16`` or ``amx_bf16``); without them bfloat16 has no hardware support
  and no gain is expected, so ``"auto"`` stays in float32 there.
* ``"bf16-vision"``: the vision encoder only (heads in float32), for comparisons.
* ``"bf16-compile"``: ``"bf16"`` with every ViT layer run through ``torch.compile``
  (inductor). All layers share two compiled graphs (windowed / global attention; weights are
  graph inputs), so compiling costs a fixed 30-80 s (2 cores) once per process, not once per
  layer. On the Zen 4 CPU measured it was no faster than ``"bf16"`` (0.61x vs 0.62x): opt-in,
  for CPUs where the copy/elementwise overhead weighs more (e.g. with AMX).
* ``"off"``: plain float32 (the reference).

Attention (``scaled_dot_product_attention``) does not get faster in bfloat16 on CPU, which is what
bounds the gain. int8 dynamic quantisation of the Linear layers was measured too (~4 % feature
error for little extra speed over bfloat16) and is not offered.

Pure functions, no Qt, no napari; torch is imported lazily. Select a mode per call, or for the
process with ``NAPARI_SAM3_CPU_FAST=off|bf16|bf16-vision|bf16-compile|auto``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

ENV_MODE = "NAPARI_SAM3_CPU_FAST"
MODES = ("auto", "off", "bf16", "bf16-vision", "bf16-compile")
# modes that also run the detector heads under bfloat16 autocast
HEADS_BF16_MODES = ("bf16", "bf16-compile")
_COMPILED_FLAG = "_napari_sam3_compiled"
_compile_lock = threading.Lock()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_mode(device: Any = "cpu", mode: str | None = "auto") -> str:
    """The concrete mode (``"off"``, ``"bf16"``, ``"bf16-vision"`` or ``"bf16-compile"``).

    ``mode=None`` or ``"auto"`` reads ``$NAPARI_SAM3_CPU_FAST`` first; ``"auto"`` means ``"bf16"`` on
    a CPU with native bfloat16 and ``"off"`` otherwise. Non-CPU devices always get ``"off"``: the
    engine chooses their dtype when loading (bfloat16 weights on CUDA).
    """
    if mode is None or mode == "auto":
        mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"Unknown CPU fast-path mode {mode!r}; use one of {', '.join(MODES)}.")
    if _device_type(device) != "cpu":
        return "off"
    if mode == "auto":
        return "bf16" if cpu_has_native_bf16() else "off"
    return mode


def _device_type(device: Any) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


@contextlib.contextmanager
def vision_autocast(device: Any = "cpu", mode: str | None = "auto") -> Iterator[str]:
    """Context for the vision encoder only; yields the resolved mode.

    Outputs made inside may be bfloat16: pass them through `cast_features` before the heads.
    """
    import torch

    resolved = resolve_mode(device, mode)
    if resolved == "off":
        yield resolved
        return
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield resolved


@contextlib.contextmanager
def heads_autocast(device: Any = "cpu", mode: str | None = "auto") -> Iterator[str]:
    """Context for the detector heads (text encoder, DETR encoder/decoder, mask head), and for
    the whole video-model pass of each frame when tracking through a stack.

    bfloat16 autocast in the ``"bf16"`` and ``"bf16-compile"`` modes, nothing otherwise; yields
    the resolved mode. Outputs made inside may be bfloat16: read them with ``.float()``.
    """
    import torch

    resolved = resolve_mode(device, mode)
    if resolved not in HEADS_BF16_MODES:
        yield resolved
        return
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield resolved


def cast_features(vision: Any, dtype: Any) -> Any:
    """Cast every floating tensor of a vision output (in place on the container) to ``dtype``."""
    import torch

    def cast(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype)
        return t

    for name in ("last_hidden_state", "pooler_output"):
        value = getattr(vision, name, None)
        if value is not None:
            setattr(vision, name, cast(value))
    for name in ("fpn_hidden_states", "fpn_position_encoding", "hidden_states"):
        value = getattr(vision, name, None)
        if value is not None:
            setattr(vision, name, tuple(cast(t) for t in value))
    return vision


def encode_vision(detector: Any, pixel_values: Any, mode: str | None = "auto") -> Any:
    """``detector.get_vision_features(pixel_values)`` through the fast path for its device.

    Parameters
    ----------
    detector : transformers.Sam3Model
        The detector (``Sam3VideoModel.detector_model``).
    pixel_values : torch.Tensor
        (B, 3, H, W) from the checkpoint's image processor, in the model dtype.
    mode : str
        ``"auto"`` (default), ``"off"``, ``"bf16"`` or ``"bf16-compile"``.

    Returns
    -------
    Sam3VisionEncoderOutput
        With every floating tensor in ``pixel_values.dtype``, ready for the float32 heads.
    """
    resolved = resolve_mode(pixel_values.device, mode)
    if resolved == "bf16-compile":
        compile_vision_layers(detector.vision_encoder)
    with vision_autocast(pixel_values.device, resolved):
        vision = detector.get_vision_features(pixel_values=pixel_values)
    if resolved != "off":
        cast_features(vision, pixel_values.dtype)
    return vision


def apply_cpu_fast_path(model: Any, mode: str | None = "auto", device: Any = None) -> str:
    """Prepare ``model`` (a Sam3VideoModel or Sam3Model) once; returns the resolved mode.

    Only ``"bf16-compile"`` changes the model (it swaps each ViT layer's ``forward`` for a compiled
    one, numerically the same as ``"bf16"``); the other modes act per call in `encode_vision`.
    """
    detector = getattr(model, "detector_model", model)
    if device is None:
        device = next(detector.parameters()).device
    resolved = resolve_mode(device, mode)
    if resolved == "bf16-compile":
        compile_vision_layers(detector.vision_encoder)
    return resolved


def compile_vision_layers(vision_encoder: Any) -> bool:
    """Run every ViT layer through one of two shared compiled graphs (idempotent).

    Each layer's weights are passed as graph inputs (``torch.func.functional_call`` on a template
    layer), so the 28 windowed and 4 global layers compile to two graphs instead of 32. The
    compile itself happens on the first encode. Returns False (and changes nothing) when the
    backbone does not look like transformers' ``Sam3ViTModel``.
    """
    import copy

    import torch

    backbone = getattr(vision_encoder, "backbone", vision_encoder)
    layers = getattr(backbone, "layers", None)
    if layers is None or not all(hasattr(layer, "window_size") for layer in layers):
        return False
    with _compile_lock:
        if getattr(backbone, _COMPILED_FLAG, False):
            return True
        templates: dict[int, Any] = {}
        for layer in layers:
            window = int(layer.window_size)
            if window not in templates:
                template = copy.deepcopy(layer)
                template.forward = type(layer).forward.__get__(template)
                templates[window] = _compiled_layer(template, torch)
            weights = dict(layer.named_parameters())
            weights.update(dict(layer.named_buffers()))
            layer.forward = _layer_forward(templates[window], weights)
        setattr(backbone, _COMPILED_FLAG, True)
    return True


def _compiled_layer(template: Any, torch: Any):
    # One code object for all templates: dynamo keeps one cache entry per input shape
    # (windowed 576-token batches vs the 5184-token global grid).
    def run(weights, hidden_states):
        return torch.func.functional_call(template, weights, (hidden_states,))

    return torch.compile(run, dynamic=False)


def _layer_forward(compiled, weights):
    def forward(hidden_states, **kwargs):
        return compiled(weights, hidden_states)

    return forward


__all__ = [
    "ENV_MODE",
    "HEADS_BF16_MODES",
    "MODES",
    "apply_cpu_fast_path",
    "cast_features",
    "compile_vision_layers",
    "cpu_has_native_bf16",
    "encode_vision",
    "heads_autocast",
    "resolve_mode",
    "vision_autocast",
]
