"""The working resolution of the classical count: objects ~10-20 px across.

Large objects are block-averaged down (a 4096 px image of 22 px nuclei is processed at 2048 px);
objects < SMALL_DIAMETER px are upsampled bilinearly so there are pixels to split them on. The
labels then go back to the image grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "block_mean",
    "labels_from_upsampled",
    "upsample",
    "upsample_factor",
    "upsample_labels",
    "work_factor",
]

WORK_DIAMETER = 10.0  # objects are processed at 10-20 px across (block mean of large objects)
LARGE_IMAGE = 2048 * 2048  # above this many pixels, speed first: objects down to 8 px across
WORK_DIAMETER_LARGE = 8.0
SMALL_DIAMETER = 9.0  # smaller objects are processed at UPSAMPLE x the resolution
UPSAMPLE = 2
MAX_UPSAMPLE_PIXELS = 4096 * 4096 // 4  # beyond this the memory and time are not worth it


def work_factor(diameter: float, n_pixels: int) -> int:
    """Block size of the working resolution: objects keep >= 10 px (>= 8 px on large images)."""
    work = WORK_DIAMETER_LARGE if n_pixels > LARGE_IMAGE else WORK_DIAMETER
    return max(1, int(diameter // work))


def upsample_factor(diameter: float, n_pixels: int) -> int:
    """UPSAMPLE for small objects on images that stay affordable at that size, else 1."""
    return UPSAMPLE if (diameter < SMALL_DIAMETER and n_pixels <= MAX_UPSAMPLE_PIXELS) else 1


def block_mean(img: np.ndarray, f: int) -> np.ndarray:
    """Downscale by an integer factor with a block mean; edge blocks average the pixels they have."""
    if f <= 1:
        return img
    h, w = img.shape
    sh, sw = -(-h // f), -(-w // f)
    out = np.zeros((sh, sw), np.float32)
    cnt = np.zeros((sh, sw), np.float32) if (h % f or w % f) else None
    for dy in range(f):  # f*f strided passes (a tiny reduced axis is slow in numpy)
        for dx in range(f):
            part = img[dy::f, dx::f]
            ph, pw = part.shape
            out[:ph, :pw] += part
            if cnt is not None:
                cnt[:ph, :pw] += 1
    if cnt is None:
        out *= np.float32(1.0 / (f * f))
    else:
        out /= cnt
    return out


def upsample_labels(labels: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour inverse of `block_mean` for a label image, cropped to ``shape``."""
    if f <= 1:
        return labels[: shape[0], : shape[1]]
    out = np.repeat(labels, f, axis=0)[: shape[0]]
    return np.repeat(out, f, axis=1)[:, : shape[1]]


def upsample(img: np.ndarray, up: int) -> np.ndarray:
    """Bilinear upsampling by an integer factor (small objects get more pixels to split on)."""
    h, w = img.shape
    ys = (np.arange(h * up, dtype=np.float32) + 0.5) / up - 0.5
    xs = (np.arange(w * up, dtype=np.float32) + 0.5) / up - 0.5
    return ndi.map_coordinates(
        img, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest"
    ).astype(np.float32, copy=False)


def labels_from_upsampled(lab: np.ndarray, up: int, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `upsample` for labels: a pixel is object when half its sub-pixels are."""
    h0, w0 = shape
    blocks = lab[: h0 * up, : w0 * up].reshape(h0, up, w0, up)
    votes = (blocks > 0).sum(axis=(1, 3))
    return np.where(votes * 2 >= up * up, blocks.max(axis=(1, 3)), 0)
