"""Foreground of the classical count: contrast, polarity, background correction, threshold.

Background / uneven illumination: a low percentile in blocks of ~4 diameters, interpolated
smoothly, is subtracted; then the image is divided by a smooth local foreground level, so dim
corners count like bright ones.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_sam3.core.classical.intensity import stat_sample
from napari_sam3.core.errors import Sam3Error

__all__ = [
    "NOISE_K",
    "detect_polarity",
    "to_unit_range",
    "foreground",
    "smooth_field",
    "smoothing_gain",
]

# Foreground must clear the background by this many sigma of the smoothed image's noise: the
# chance of a noise pixel doing so is ~3e-7 (one in a 2000^2 image), while a nucleus with a
# contrast of twice the pixel noise is still > 6 sigma after smoothing at d/10.
NOISE_K = 5.0
# The background field is a low (5th) percentile, ~1.645 sigma under the background's mean (the
# minimum over neighbouring cells takes it a little lower): the floor is measured from the mean.
BG_Q_SIGMA = 2.0


def _robust_normalise(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = np.percentile(stat_sample(img), (0.5, 99.9))
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img), float(lo), float(hi)
    out = (img - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(out, -0.5, 1.5, out=out)  # hot pixels stop at 1.5x the bright end
    return out, float(lo), float(hi)


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """``img`` scaled so its 0.5th / 99.9th percentiles are 0 / 1 (clipped to -0.5..1.5)."""
    return _robust_normalise(img)[0]


def detect_polarity(norm: np.ndarray) -> str:
    """Return "bright" when the upper tail is longer than the lower one (fluorescence), else "dark"."""
    p_lo, med, p_hi = np.percentile(stat_sample(norm), (1, 50, 99))
    return "bright" if (p_hi - med) >= (med - p_lo) else "dark"


def _interp_matrix(n_out: int, n_grid: int, block: float) -> np.ndarray:
    """Linear interpolation weights from grid cells (centres at (i+0.5)*block) to n_out pixels."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / block - 0.5
    pos = np.clip(pos, 0, n_grid - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_grid - 1)
    t = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_grid), np.float32)
    m[np.arange(n_out), i0] += 1 - t
    m[np.arange(n_out), i1] += t
    return m


def _block_grid(img: np.ndarray, block: int, q: float) -> tuple[np.ndarray, int]:
    """The ``q``-th percentile of each cell of a grid of ~``block`` px (subsampled for speed).

    Returns the grid and the cell size actually used (a multiple of the subsampling step).
    """
    h, w = img.shape
    step = max(1, block // 16)
    b = max(1, block // step)
    block = b * step
    gh, gw = max(1, int(np.ceil(h / block))), max(1, int(np.ceil(w / block)))
    pad = np.pad(img, ((0, gh * block - h), (0, gw * block - w)), mode="reflect")
    sub = pad[::step, ::step]
    cells = sub.reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, b * b)
    return np.percentile(cells, q, axis=2).astype(np.float32), block


def smooth_field(img: np.ndarray, block: int, q: float, grid_filter: str) -> np.ndarray:
    """A smooth field: block percentiles, robustified on the grid, interpolated to full size."""
    grid, block = _block_grid(img, block, q)
    if grid.shape[0] >= 3 and grid.shape[1] >= 3:
        if grid_filter == "min":  # background: cells filled by an object clump are outliers upwards
            grid = ndi.minimum_filter(grid, 3, mode="nearest")
        else:  # foreground level: an empty cell is an outlier downwards
            grid = ndi.maximum_filter(grid, 3, mode="nearest")
        grid = ndi.gaussian_filter(grid, 1.0, mode="nearest")
    my = _interp_matrix(img.shape[0], grid.shape[0], block)
    mx = _interp_matrix(img.shape[1], grid.shape[1], block)
    return (my @ grid) @ mx.T


def _threshold(values: np.ndarray, method: str | float) -> float:
    from skimage import filters

    if not isinstance(method, str):
        return float(method)
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float("inf")
    if method == "otsu":
        return float(filters.threshold_otsu(values))
    if method == "li":
        return float(filters.threshold_li(values))
    raise Sam3Error(f"Unknown threshold method {method!r}; use 'otsu', 'li' or a number.")


def smoothing_gain(sigma: float) -> float:
    """Noise sigma after a Gaussian filter of ``sigma`` px, for unit white noise (2-D)."""
    k = ndi.gaussian_filter1d(np.eye(1, 41, 20, dtype=np.float64)[0], sigma, truncate=3.0)
    return float((k**2).sum())  # 2-D kernel is separable: sqrt(sum k^2)^2


def foreground(
    img: np.ndarray,
    diameter: float,
    polarity: str,
    threshold: str | float,
    background: bool,
    noise: float = 0.0,
    noise_grain: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, str, float]:
    """Normalised, corrected, smoothed image, its foreground mask, the polarity used and the
    threshold (all at the resolution of ``img``).

    ``noise`` is the pixel noise sigma of ``img`` (its own units): foreground must also rise
    NOISE_K x the noise of the smoothed image above the background, so camera noise alone never
    makes objects, whatever the automatic threshold says. ``noise_grain``: size in ``img`` pixels
    of one independent noise sample (2 on a 2x upsampled image).
    """
    norm, lo, hi = _robust_normalise(img)
    if polarity == "auto":
        polarity = detect_polarity(norm)
    if polarity == "dark":
        norm = 1.0 - norm
    elif polarity != "bright":
        raise Sam3Error(f"Unknown polarity {polarity!r}; use 'auto', 'bright' or 'dark'.")
    sigma = max(0.7, diameter / 10.0)
    smooth = ndi.gaussian_filter(norm, sigma, mode="nearest", truncate=3.0)
    block = int(max(16, round(4 * diameter)))
    gain = smoothing_gain(max(sigma / noise_grain, 0.3))
    noise_s = noise / (hi - lo) * gain if hi > lo else 0.0
    if background and min(img.shape) >= 2 * block:
        bg = smooth_field(smooth, block, 5, "min")
        corr = smooth - bg
        floor = corr > np.float32((BG_Q_SIGMA + NOISE_K) * noise_s) if noise_s > 0 else None
        # Uneven illumination is multiplicative in fluorescence: divide by a smooth local
        # foreground level (never below a fraction of the global one, so empty areas stay empty).
        fg = smooth_field(corr, block * 2, 95, "max")
        glob = float(np.percentile(stat_sample(corr), 99))
        np.maximum(fg, np.float32(max(glob * 0.25, 1e-6)), out=fg)
        corr /= fg
    else:
        corr = smooth - np.float32(np.percentile(stat_sample(smooth), 5))
        floor = corr > np.float32((BG_Q_SIGMA + NOISE_K) * noise_s) if noise_s > 0 else None
    t = _threshold(stat_sample(corr).ravel(), threshold)
    mask = corr > t
    if floor is not None:
        mask &= floor
    return corr, mask, polarity, t
