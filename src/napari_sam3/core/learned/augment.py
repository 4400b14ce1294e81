"""What differs between microscopes, applied to training crops of the nucleus network.

One home for the photometric augmentations: training the shipped network
(training/train_nucleus_net.py) and fine-tuning on a user's labels use the same ones. Input and
output are normalised planes (`scaling.normalise`: background ~0, bright nuclei ~1) at the
network's scale (nuclei ~16 px across).

The wide recipe covers what sources from other labs showed the network (issue 18): nuclei far
dimmer than their neighbours, saturated (clipped, flat) interiors, speckled / hollow chromatin,
few photons, 8-bit cameras, uneven illumination and blur. Every parameter is a broad random range,
none is fitted to a particular set.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["photometric"]


def _smooth_noise(shape, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ~sigma px."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / max(float(f.std()), 1e-6)


def _narrow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The recipe before issue 18 (kept to compare recipes at equal steps)."""
    if rng.random() < 0.3:
        img = ndi.gaussian_filter(img, rng.uniform(0.5, 1.5))
    pos = np.clip(img, 0, None)
    img = img - pos + pos ** rng.uniform(0.7, 1.4)
    img = img * rng.uniform(0.6, 1.4) + rng.uniform(-0.1, 0.1)
    return img + rng.normal(0, rng.uniform(0, 0.08), img.shape)


def photometric(img: np.ndarray, rng: np.random.Generator, *, wide: bool = True) -> np.ndarray:
    """A float32 copy of ``img`` as another microscope might have recorded it.

    ``wide=False`` is the older, narrower recipe (contrast, offset, gamma, noise, blur only).
    """
    img = np.asarray(img, np.float32).copy()
    if not wide:
        return _narrow(img, rng).astype(np.float32)
    shape = img.shape
    fg = np.clip(img, 0, 1)  # where the nuclei are, from intensity alone (no labels needed)
    if rng.random() < 0.5:  # some nuclei much dimmer than others (field ~ one nucleus across)
        gain = np.exp(_smooth_noise(shape, rng.uniform(6, 14), rng) * rng.uniform(0.3, 0.9))
        img = img * np.clip(gain, 0.08, 3.0)
    if rng.random() < 0.4:  # speckled / hollow chromatin: texture inside the bright parts only
        tex = _smooth_noise(shape, rng.uniform(0.7, 2.0), rng)
        img = img * np.clip(1 + rng.uniform(0.2, 0.7) * fg * tex, 0.05, None)
        if rng.random() < 0.3:  # dark interiors (nucleoli, rim staining): dim the cores
            core = ndi.gaussian_filter(fg, 3.0)
            img = img * (1 - rng.uniform(0.2, 0.6) * np.clip(core / max(core.max(), 1e-6), 0, 1))
    if rng.random() < 0.3:  # saturated camera: bright interiors clipped flat, then renormalised
        pos = img[img > 0.2]
        if pos.size:
            c = max(float(np.quantile(pos, rng.uniform(0.2, 0.8))), 0.1)
            img = np.minimum(img, c) / c
    if rng.random() < 0.4:  # optics: defocus / a larger point spread
        img = ndi.gaussian_filter(img, rng.uniform(0.5, 2.2))
    if rng.random() < 0.3:  # uneven illumination: a ramp or a broad blob, gain and offset
        yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32) / max(shape)
        a = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(a) * yy + np.sin(a) * xx
        ramp = (ramp - ramp.mean()) / max(float(np.ptp(ramp)), 1e-6)
        img = img * (1 + rng.uniform(-0.8, 0.8) * ramp) + rng.uniform(-0.2, 0.2) * ramp
    pos = np.clip(img, 0, None)
    img = img - pos + pos ** rng.uniform(0.6, 1.6)  # gamma
    img = img * rng.uniform(0.5, 1.5) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.4:  # few photons: shot noise on top of a background level
        k = np.exp(rng.uniform(np.log(3), np.log(150)))  # photons at a bright nucleus
        bg = rng.uniform(0.02, 0.3)
        img = rng.poisson(np.clip(img + bg, 0, None) * k).astype(np.float32) / k - bg
    img = img + rng.normal(0, rng.uniform(0, 0.1), shape)  # read noise
    if rng.random() < 0.3:  # an 8-bit camera (or a dim 8-bit export): few grey levels
        levels = np.exp(rng.uniform(np.log(12), np.log(255)))
        lo = float(np.quantile(img, 0.01))
        hi = float(img.max())
        step = max(hi - lo, 1e-6) / levels
        img = np.clip(np.round((img - lo) / step), 0, levels) * step + lo
    return img.astype(np.float32)
