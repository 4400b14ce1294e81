"""A SAM3 adapter: low-rank updates of the detector's linear layers, and its file.

What is adapted: every ``nn.Linear`` of the DETR encoder, the DETR decoder (with its box, presence
and reference heads), the mask head and the dot-product scorer (`ADAPTED_PARTS`), and the
convolutions of the mask head's pixel decoder (`ADAPTED_CONVS`). The vision backbone and the text
encoder stay frozen, so the engine's cached image and text features stay valid. Each adapted layer
computes ``W x + b + (alpha / rank) * B (A x)`` (LoRA; for a convolution A is a rank-r convolution
of the same kernel and B a 1 x 1 one); ``B`` starts at zero, so a fresh adapter gives exactly the
base model's outputs. Why the convolutions: on the tiny random checkpoint, low-rank updates of the
linear layers alone learnt classes and boxes but no masks (dice stuck at 0.85 over 300 steps); with
the pixel decoder's convolutions too the mask loss falls steadily (tests/test_adapt.py).

How it is applied: `install_hooks` puts one forward hook on each adapted layer, once per model.
A hook reads the adapter currently set on the detector (`set_active`); with none set it returns
the layer's output untouched, so the model is exactly the base model. The parameter names of the
model never change (no wrapped modules), so loading and parity with transformers are unaffected.

The file is safetensors (written atomically by `io.adapter_file.write_adapter`):
``<layer>.lora_A`` (rank, in) and ``<layer>.lora_B`` (out, rank) per layer, and string metadata
with the provenance (`FORMAT`, base checkpoint and the digest of the adapted base weights,
concept, images, label digests, steps, rank, held-out before -> after).
A file of another format, for layers this model does not have, of the wrong shapes or made for
other base weights is refused with one line (`Sam3Error`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sam3.core.defaults import ADAPT_RANK
from napari_sam3.core.errors import Sam3Error

FORMAT = "napari-sam3-adapter"
VERSION = "1"
SUFFIX = ".sam3-adapter.safetensors"
ADAPTED_PARTS = ("detr_encoder", "detr_decoder", "mask_decoder", "dot_product_scoring")
ADAPTED_CONVS = ("mask_decoder.pixel_decoder", "mask_decoder.instance_projection")
_ACTIVE = "_napari_sam3_adapter"  # attribute on the detector: the adapter its hooks apply
_HOOKS = "_napari_sam3_adapter_hooks"
_DIGEST = "_napari_sam3_base_digest"


def adapted_layers(detector) -> dict[str, Any]:
    """``{name: nn.Linear or nn.Conv2d}`` of the layers an adapter changes, in a stable order."""
    import torch

    out = {}
    for part in ADAPTED_PARTS:
        for name, sub in getattr(detector, part).named_modules():
            if isinstance(sub, torch.nn.Linear):
                out[f"{part}.{name}"] = sub
    for part in ADAPTED_CONVS:
        for name, sub in detector.get_submodule(part).named_modules():
            if isinstance(sub, torch.nn.Conv2d):
                out[f"{part}.{name}" if name else part] = sub
    return out


def lora_shapes(layer, rank: int) -> tuple[tuple, tuple]:
    """Shapes of A and B of a rank-``rank`` update of ``layer``."""
    out_f, in_f = layer.weight.shape[:2]
    kernel = tuple(layer.weight.shape[2:])  # () for a linear layer
    return (rank, in_f, *kernel), (out_f, rank, *((1,) * len(kernel)))


def lora_delta(layer, x, a, b, scale: float):
    """``scale * B (A x)`` for a linear or a convolution ``layer``."""
    import torch.nn.functional as F

    if a.dim() == 2:
        return F.linear(F.linear(x, a), b) * scale
    mid = F.conv2d(x, a, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.conv2d(mid, b) * scale


def base_digest(detector) -> str:
    """sha256 (16 hex) of the adapted layers' base weights: which base an adapter belongs to."""
    cached = getattr(detector, _DIGEST, None)
    if cached is not None:
        return cached
    import torch

    h = hashlib.sha256()
    for name, layer in adapted_layers(detector).items():
        h.update(name.encode())
        w = layer.weight.detach().to("cpu", torch.float32).contiguous()
        h.update(w.numpy().tobytes())
    digest = h.hexdigest()[:16]
    object.__setattr__(detector, _DIGEST, digest)
    return digest


@dataclass
class Sam3Adapter:
    """Low-rank updates ``{layer: (A, B)}`` and their provenance ``meta`` (JSON-able values)."""

    rank: int
    alpha: float
    weights: dict[str, tuple[Any, Any]]
    meta: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def new(cls, detector, rank: int = ADAPT_RANK, alpha: float | None = None, seed: int = 0):
        """A zero update (B = 0) for every adapted layer; A drawn as LoRA does (Kaiming)."""
        import torch

        if rank < 1:
            raise Sam3Error(f"The adapter rank must be at least 1, got {rank}.")
        gen = torch.Generator().manual_seed(seed)
        weights = {}
        for name, layer in adapted_layers(detector).items():
            shape_a, shape_b = lora_shapes(layer, rank)
            bound = 1.0 / math.sqrt(math.prod(shape_a[1:]))
            a = (torch.rand(shape_a, generator=gen) * 2 - 1) * bound
            b = torch.zeros(shape_b)
            device = layer.weight.device
            weights[name] = (a.to(device), b.to(device))
        meta = {"base_digest": base_digest(detector)}
        return cls(rank, float(alpha if alpha is not None else rank), weights, meta)

    def parameters(self) -> list:
        return [t for pair in self.weights.values() for t in pair]

    def requires_grad_(self, flag: bool = True) -> Sam3Adapter:
        for t in self.parameters():
            t.requires_grad_(flag)
        return self

    def is_zero(self) -> bool:
        return all(not bool(b.detach().abs().max() > 0) for _, b in self.weights.values())

    def state(self) -> dict:
        """Detached copies of the weights (to keep the best step while training)."""
        return {k: (a.detach().clone(), b.detach().clone()) for k, (a, b) in self.weights.items()}

    def load_state(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for k, (a, b) in state.items():
                self.weights[k][0].copy_(a)
                self.weights[k][1].copy_(b)

    # ------------------------------------------------------------------ file
    def file_contents(self) -> tuple[dict, dict]:
        """(tensors, string metadata) of the adapter file (`io.adapter_file.write_adapter`)."""
        tensors = {}
        for name, (a, b) in self.weights.items():
            tensors[f"{name}.lora_A"] = a.detach().to("cpu").float().contiguous()
            tensors[f"{name}.lora_B"] = b.detach().to("cpu").float().contiguous()
        meta = {k: json.dumps(v) for k, v in self.meta.items()}
        meta.update(format=FORMAT, version=VERSION, rank=str(self.rank), alpha=str(self.alpha))
        return tensors, meta

    @classmethod
    def load(cls, path: str | os.PathLike, detector) -> Sam3Adapter:
        """Read an adapter file for ``detector``; `Sam3Error` (one line) when it does not fit."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise Sam3Error(f"Adapter file {path} not found; give the path of a {SUFFIX} file.")
        try:
            with safe_open(str(path), framework="pt") as fh:
                raw = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise Sam3Error(
                f"{path.name} is not a safetensors file ({exc}); give a {SUFFIX} file that "
                "napari-sam3 adapt wrote."
            ) from exc
        if raw.get("format") != FORMAT:
            raise Sam3Error(
                f"{path.name} is not a napari-sam3 adapter (no '{FORMAT}' tag); give a file that "
                "napari-sam3 adapt (or the widget's Adapt) wrote."
            )
        if raw.get("version") != VERSION:
            raise Sam3Error(
                f"{path.name} is adapter version {raw.get('version')}, this napari-sam3 reads "
                f"version {VERSION}; update napari-sam3 or adapt again."
            )
        try:
            rank, alpha = int(raw["rank"]), float(raw["alpha"])
            meta = {
                k: json.loads(v) for k, v in raw.items() if k not in ("format", "version", "rank")
            }
        except (KeyError, ValueError) as exc:
            raise Sam3Error(f"{path.name} has damaged metadata ({exc}); adapt again.") from exc
        meta.pop("alpha", None)
        layers = adapted_layers(detector)
        expected = {f"{n}.lora_{p}" for n in layers for p in "AB"}
        if set(tensors) != expected:
            strange = sorted(set(tensors) ^ expected)[:3]
            raise Sam3Error(
                f"{path.name} does not fit this SAM3 model (layers differ: {', '.join(strange)}); "
                "use an adapter made for this checkpoint or adapt again."
            )
        weights = {}
        for name, layer in layers.items():
            a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
            if (tuple(a.shape), tuple(b.shape)) != lora_shapes(layer, rank):
                raise Sam3Error(
                    f"{path.name} does not fit this SAM3 model ({name}: update of shape "
                    f"{tuple(b.shape)} x {tuple(a.shape)} for a layer of shape "
                    f"{tuple(layer.weight.shape)}); use an adapter made for this checkpoint or "
                    "adapt again."
                )
            like = layer.weight
            weights[name] = (a.to(like.device, like.dtype), b.to(like.device, like.dtype))
        digest = base_digest(detector)
        if meta.get("base_digest") != digest:
            raise Sam3Error(
                f"{path.name} was made for other SAM3 weights (base {meta.get('base')!r}); "
                "adapt again on this checkpoint."
            )
        adapter = cls(rank, alpha, weights, meta)
        adapter.meta["file"] = str(path)
        return adapter


# ---------------------------------------------------------------------- applying
def install_hooks(detector) -> None:
    """One forward hook per adapted layer (once per model); they apply the active adapter."""
    if getattr(detector, _HOOKS, None) is not None:
        return
    import torch

    handles = []
    for name, layer in adapted_layers(detector).items():

        def hook(module, args, output, _name=name):
            adapter = getattr(detector, _ACTIVE, None)
            if adapter is None:
                return None  # the base layer, untouched
            a, b = adapter.weights[_name]
            x = args[0]
            if a.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                a, b = a.to(x.dtype), b.to(x.dtype)  # e.g. a half-precision model on a GPU
            return output + lora_delta(module, x, a, b, adapter.scale)

        handles.append(layer.register_forward_hook(hook))
    object.__setattr__(detector, _HOOKS, handles)


def set_active(detector, adapter: Sam3Adapter | None) -> Sam3Adapter | None:
    """Make ``adapter`` (or none) the one the detector applies; returns the previous one."""
    if adapter is not None:
        install_hooks(detector)
    previous = getattr(detector, _ACTIVE, None)
    object.__setattr__(detector, _ACTIVE, adapter)
    return previous


def active(detector) -> Sam3Adapter | None:
    return getattr(detector, _ACTIVE, None)


class AdapterHooks:
    """`Sam3Engine.set_adapter` / `Sam3Engine.adapter` (a mixin: needs ``model`` and ``_lock``)."""

    def set_adapter(self, adapter=None):
        """Use an adapter (a file path or `Sam3Adapter`) on the detector; None goes back to the
        base model. Image and text features stay cached (the adapter changes only the detector
        heads). Returns the adapter now in use."""
        with self._lock:
            if adapter is not None and not isinstance(adapter, Sam3Adapter):
                adapter = Sam3Adapter.load(adapter, self.model.detector_model)
            set_active(self.model.detector_model, adapter)
        return adapter

    @property
    def adapter(self) -> Sam3Adapter | None:
        """The `Sam3Adapter` the detector applies now, or None (the base model)."""
        return active(self.model.detector_model)
