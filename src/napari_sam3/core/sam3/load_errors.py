"""Failures inside a model step, translated into a Sam3Error that tells the user what to do."""

from __future__ import annotations

from contextlib import contextmanager

from napari_sam3.core.errors import Sam3Error


@contextmanager
def model_errors(step: str, device):
    """Out-of-memory during a model step becomes a Sam3Error that says what to do."""
    import torch

    try:
        yield
    except out_of_memory_error(torch) as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise Sam3Error(
            f"Out of {device.type.upper()} memory while {step}. Close other programs using it, "
            "clear the embedding cache, split the image into tiles, or use device='cpu'."
        ) from exc


def out_of_memory_error(torch):
    """torch.OutOfMemoryError (torch >= 2.5) or its older CUDA-only name."""
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
