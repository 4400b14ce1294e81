"""What the nucleus network sees: a normalised plane rescaled so nuclei are CANONICAL_DIAMETER px.

Training (training/train_nucleus_net.py) and inference (`predict`) both go through here, so the
network never meets an image prepared differently from the ones it learned from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from napari_sam3.core.classical.intensity import stat_sample
from napari_sam3.core.learned.network import CANONICAL_DIAMETER

__all__ = ["normalise", "resize", "scale_for"]

LOW, HIGH = 1.0, 99.8  # percentiles mapped to 0 and 1 (robust to hot pixels and empty fields)
CLIP = (-1.0, 4.0)


def normalise(plane: np.ndarray) -> np.ndarray:
    """Float32 plane with the 1st percentile at 0 and the 99.8th at 1 (clipped to -1..4)."""
    x = np.asarray(plane, np.float32)
    lo, hi = np.percentile(stat_sample(x), [LOW, HIGH])
    span = float(hi - lo) if hi > lo else 1.0
    return np.clip((x - np.float32(lo)) / np.float32(span), *CLIP).astype(np.float32, copy=False)


def scale_for(diameter: float) -> float:
    """Resize factor that brings objects of ``diameter`` px to the network's CANONICAL_DIAMETER."""
    return float(CANONICAL_DIAMETER / diameter)


def resize(x: np.ndarray | torch.Tensor, shape: tuple[int, int], labels: bool = False):
    """Bilinear (antialiased when shrinking) resize of a 2-D plane; nearest for label images."""
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    t4 = t.reshape(1, 1, *t.shape[-2:]).float()
    if labels:
        out = F.interpolate(t4, size=shape, mode="nearest")
    else:
        shrink = shape[0] < t4.shape[-2] or shape[1] < t4.shape[-1]
        out = F.interpolate(t4, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(*t.shape[:-2], *shape)
