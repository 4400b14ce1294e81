"""Synthetic fluorescent nuclei with ground truth, generated offline and deterministically.

Used by the sample data, the counting tests and the counting benchmark. The picture aims at what a
widefield DAPI/Hoechst image looks like: dense, touching nuclei of varied size, shape and brightness,
a dome-shaped intensity profile (bright centre, dimmer rim), chromatin texture, a blurred optical
transfer, uneven (vignetted, tilted) illumination, autofluorescent background, shot noise, camera
offset and read noise, and optionally hot pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["synthetic_nuclei"]


def synthetic_nuclei(
    shape: tuple[int, int] = (512, 512),
    n: int | None = None,
    seed: int = 0,
    *,
    diameter: float = 18.0,
    diameter_spread: float = 0.2,
    coverage: float = 0.45,
    touching: float = 0.8,
    elongation: float = 0.25,
    brightness_spread: float = 0.35,
    illumination: float = 0.5,
    background: float = 0.08,
    photons: float = 300.0,
    read_noise: float = 3.0,
    offset: float = 100.0,
    blur: float = 1.0,
    hot_pixels: int = 0,
    dtype: np.dtype | type = np.uint16,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, labels)``: a synthetic nuclei micrograph and its ground-truth label image.

    Parameters
    ----------
    shape : (H, W)
    n : int, optional
        Number of nuclei to try to place; default from ``coverage`` (fraction of the area covered).
        Fewer are placed when the field is full.
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``: same arguments, same image.
    diameter, diameter_spread : float
        Median nucleus diameter in pixels and its relative spread (log-normal sigma).
    touching : float
        Closest allowed centre distance as a fraction of the sum of the two radii; below 1 nuclei touch
        and press into each other (the ground truth splits the contact along the equal-distance line).
    elongation : float
        Up to this relative difference between the ellipse axes.
    brightness_spread : float
        Log-normal sigma of the per-nucleus brightness.
    illumination : float
        Strength of the uneven illumination: the dimmest corner gets ``1 - illumination`` of the light.
    background : float
        Autofluorescent background relative to a median nucleus.
    photons, read_noise, offset : float
        Photons at a median nucleus centre (Poisson), camera read noise and offset in ADU.
    blur : float
        Gaussian point-spread sigma in pixels.
    hot_pixels : int
        Number of saturated single pixels.
    """
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    r_med = diameter / 2.0
    if n is None:
        n = int(round(coverage * h * w / (np.pi * r_med**2)))
    radii_try = r_med * np.exp(rng.normal(0.0, diameter_spread, size=4 * n + 16))
    radii_try = np.clip(radii_try, 0.4 * r_med, 2.0 * r_med)
    centres, radii = _place(h, w, n, radii_try, touching, rng)

    labels = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf, np.float32)  # normalised distance of the owning nucleus
    profile = np.zeros((h, w), np.float32)
    bright = np.exp(rng.normal(0.0, brightness_spread, size=len(radii))).astype(np.float32)
    for k, ((cy, cx), r) in enumerate(zip(centres, radii, strict=True)):
        e = rng.uniform(0.0, elongation)
        a, b = r * (1 + e) ** 0.5, r / (1 + e) ** 0.5
        theta = rng.uniform(0, np.pi)
        harm = rng.normal(0, 0.04, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=2)
        ext = int(np.ceil(max(a, b) * 1.15)) + 1
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        phi = np.arctan2(v, u)
        wobble = 1 + harm[0] * np.cos(2 * phi + phase[0]) + harm[1] * np.cos(3 * phi + phase[1])
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble
        sub_best = best[y0:y1, x0:x1]
        win = (d < 1.0) & (d < sub_best)
        sub_best[win] = d[win]
        labels[y0:y1, x0:x1][win] = k + 1
        dome = 0.4 + 0.6 * np.sqrt(np.clip(1 - d * d, 0, 1))
        profile[y0:y1, x0:x1][win] = bright[k] * dome[win]

    # Chromatin texture, optics, illumination, background, noise.
    texture = ndi.gaussian_filter(rng.normal(0, 1, (h, w)).astype(np.float32), max(1.0, r_med / 4))
    texture /= texture.std() + 1e-12
    signal = profile * (1 + 0.12 * texture)
    if blur > 0:
        signal = ndi.gaussian_filter(signal, blur)
    illum = _illumination(h, w, illumination, rng)
    bg_field = background * (1 + 0.3 * _smooth_noise(h, w, rng))
    expected = photons * illum * (signal + bg_field)
    counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
    image = offset + counts + rng.normal(0, read_noise, (h, w)).astype(np.float32)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    if hot_pixels:
        ys = rng.integers(0, h, hot_pixels)
        xs = rng.integers(0, w, hot_pixels)
        image[ys, xs] = info.max if info is not None else 65535.0
    if info is not None:
        image = np.clip(np.round(image), info.min, info.max)
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(labels)[0]
    return image.astype(dtype), labels.astype(np.int32)


def _place(h, w, n, radii_try, touching, rng):
    """Dart throwing with a grid hash: up to ``n`` nuclei that overlap at most as ``touching`` allows."""
    rmax = float(radii_try.max())
    cell = 2 * rmax
    gh, gw = int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1
    grid: dict[tuple[int, int], list[int]] = {}
    cy_l: list[float] = []
    cx_l: list[float] = []
    r_l: list[float] = []
    tries = len(radii_try)
    ys = rng.uniform(0, h, tries)
    xs = rng.uniform(0, w, tries)
    for t in range(tries):
        if len(r_l) >= n:
            break
        y, x, r = ys[t], xs[t], radii_try[t]
        gy, gx = int(y // cell), int(x // cell)
        ok = True
        for yy in range(max(0, gy - 1), min(gh, gy + 2)):
            for xx in range(max(0, gx - 1), min(gw, gx + 2)):
                for j in grid.get((yy, xx), ()):
                    if (cy_l[j] - y) ** 2 + (cx_l[j] - x) ** 2 < (touching * (r_l[j] + r)) ** 2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            grid.setdefault((gy, gx), []).append(len(r_l))
            cy_l.append(y)
            cx_l.append(x)
            r_l.append(r)
    return np.stack([np.array(cy_l), np.array(cx_l)], axis=1), np.array(r_l)


def _illumination(h, w, strength, rng):
    """A smooth field in [1 - strength, 1]: off-centre vignetting plus a tilt."""
    if strength <= 0:
        return np.ones((h, w), np.float32)
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :]
    cy, cx = rng.uniform(0.3, 0.7, 2)
    vign = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.45**2))
    ang = rng.uniform(0, 2 * np.pi)
    tilt = 0.5 + 0.5 * ((yy - 0.5) * np.sin(ang) + (xx - 0.5) * np.cos(ang))
    field = 0.6 * vign + 0.4 * tilt
    field = (field - field.min()) / (field.max() - field.min() + 1e-12)
    return (1 - strength + strength * field).astype(np.float32)


def _smooth_noise(h, w, rng):
    coarse = rng.normal(0, 1, (8, 8)).astype(np.float32)
    field = ndi.zoom(coarse, (h / 8, w / 8), order=3)[:h, :w]
    field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    return field / (np.abs(field).max() + 1e-12)
