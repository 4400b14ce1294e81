"""Seeds for splitting touching objects: one peak per object on a seed surface.

The surface is the distance transform ("shape"), the smoothed intensity ("intensity") or, by
default, their product: a dim nucleus pressed against a bright one still has its own distance
peak, and two nuclei with a wide flat contact still have their own brightness peaks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SPLIT_MODES", "find_seeds", "seed_surface"]

SPLIT_MODES = ("shape", "intensity", "shape+intensity")
# All as fractions of the diameter. Seeds at least MIN_DIST apart, close enough for two
# overlapping nuclei to get one each; a textured single nucleus that gets two is made whole again
# by the neck test of `core.classical.split` (no neck in its mask between them), which replaced
# the fixed half-diameter separation of round 1 (that merged every overlapping pair).
# Smoothing of the seed surface and of the intensity, and DT_SAT (the distance transform counts
# up to it; deeper inside, intensity decides) were tuned on synthetic_nuclei.
MIN_DIST = 0.2
DT_SMOOTH = 0.04
INT_SMOOTH = 0.03
DT_SAT = 0.5
SEED_T = 0.25  # seed distances are measured in the mask above this fraction of the bright end
# Objects < SMALL_DIAMETER px: blur merges touching nuclei into one mask and one brightness peak,
# so the seed intensity also gets a scale-normalised -LoG at LOG_SIGMA x the diameter.
LOG_SIGMA = 0.2


def seed_surface(
    mask: np.ndarray, corr: np.ndarray, d: float, mode: str, blob: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface whose peaks are seeds, where seeds may lie (away from the mask edge), and the
    distance transform the shape cue came from (the neck test of `core.classical.split` reuses it).

    ``corr`` is the corrected image, ``d`` the diameter at this resolution; ``blob`` adds a -LoG
    term (small, blurred objects).
    """
    if mode == "shape":
        dt = ndi.distance_transform_edt(mask).astype(np.float32)
        surf = ndi.gaussian_filter(dt, max(0.5, d * DT_SMOOTH))
        inside = dt > max(0.15 * d, 1.0)
        return surf, inside, dt
    inside = ndi.binary_erosion(mask, border_value=1)  # == distance > 1 from background
    inten = ndi.gaussian_filter(corr, max(0.7, d * INT_SMOOTH))
    if blob:  # small objects: add the blob (-LoG) response, which peaks once per nucleus
        sg = d * LOG_SIGMA
        inten -= np.float32(sg * sg) * ndi.gaussian_laplace(corr, sg)
    if mode == "intensity":
        return inten, inside, ndi.distance_transform_edt(mask).astype(np.float32)
    # The distance cue is taken from a stricter mask (above SEED_T of the bright end of the
    # objects), where touching nuclei with dimmer rims already come apart.
    vals = corr[mask]
    strict = corr > np.float32(
        SEED_T * float(np.percentile(vals[:: max(1, vals.size // 200000)], 95))
    )
    dt_seed = ndi.distance_transform_edt(strict & mask).astype(np.float32)
    surf = (
        np.minimum(dt_seed, np.float32(d * DT_SAT))
        / np.float32(d * DT_SAT)
        * np.clip(inten, 0, None)
    )
    surf = ndi.gaussian_filter(surf, max(0.3, d * DT_SMOOTH))
    return surf, inside, dt_seed


def find_seeds(
    surf: np.ndarray, inside: np.ndarray, d: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Peaks of ``surf`` at least ``MIN_DIST * d`` apart: the peak mask, its labels and count."""
    size = max(3, int(round(MIN_DIST * d)) | 1)
    peaks = (surf >= ndi.maximum_filter(surf, size=size)) & inside
    markers, nm = ndi.label(peaks, structure=np.ones((3, 3)))
    return peaks, markers, nm
