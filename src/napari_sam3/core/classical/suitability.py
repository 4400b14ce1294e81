"""Is there anything an intensity threshold can count? (checked before the classical count runs)

Two facts about fluorescence decide it, whatever the objects' size:
- dye only adds light, so the darkest level is the unstained background, and a fair part of any
  field of view is background: many pixels lie within the camera noise of the local floor.
  In phase contrast and transmitted light the floor is the darkest part of the objects (or their
  halos) and the background sits far above it, so almost no pixel is near the floor;
- objects must rise above the camera noise (`core.classical.foreground.NOISE_K`); an empty, dim
  or noise-only plane has nothing that does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_sam3.core.classical.foreground import smooth_field, smoothing_gain

__all__ = [
    "FORCED_NOT_FLUORESCENCE",
    "NOT_FLUORESCENCE",
    "NOTHING_ABOVE_NOISE",
    "background_fraction",
    "looks_transmitted",
]

NEAR_FLOOR_SIGMA = 8.0  # "near the floor": within this many sigma of the smoothed noise
MIN_BACKGROUND_FRACTION = 0.25  # measured: fluorescence >= 0.35 (real >= 0.57), phase <= 0.17

NOTHING_ABOVE_NOISE = (
    "Nothing in this plane stands out from the camera noise, so no objects were counted. If there "
    "are objects, pick the channel that shows them, give the diameter, or count with SAM3 and "
    "exemplar boxes."
)
NOT_FLUORESCENCE = (
    "This plane does not look like fluorescence (almost no pixel is near the background level, as "
    "in phase contrast or transmitted light): an intensity threshold cannot count its objects, so "
    "none were counted. Pick the fluorescence channel, or count with SAM3 and exemplar boxes "
    "(or set the polarity yourself, bright or dark objects, to force the classical count: "
    "CLI --polarity bright)."
)

# Kept in the result when the user forces the polarity past the check above: the count runs as
# asked, but thousands of "objects" on an H&E or brightfield plane must not come back unflagged.
FORCED_NOT_FLUORESCENCE = (
    "This plane does not look like fluorescence (almost no pixel is near the background level, as "
    "in phase contrast, brightfield or H&E): it was counted only because the polarity was set, and "
    "an intensity threshold is unreliable here, so check the objects. Pick the fluorescence "
    "channel, or count with SAM3 and exemplar boxes."
)


def background_fraction(img: np.ndarray, noise: float) -> float:
    """Fraction of the plane within NEAR_FLOOR_SIGMA x noise of its local floor (2nd percentile
    in blocks of 1/16 of the view), on a <= 1024 px centre crop at full resolution smoothed by
    1 px. Full resolution, because ``noise`` is the pixel noise: over blocks of pixels camera
    noise is not white (fixed pattern, haze), and structure would pass for noise."""
    h, w = img.shape
    side = 1024
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    view = img[y0 : y0 + side, x0 : x0 + side]
    b = max(1, int(np.ceil(max(view.shape) / 512)))
    small = ndi.gaussian_filter(view, 1.0)[::b, ::b]  # a strided sample: the noise stays per pixel
    noise_s = noise * smoothing_gain(1.0)
    if not noise_s > 0:
        return 1.0
    block = max(8, min(small.shape) // 16)
    floor = smooth_field(small, block, 2, "min")
    return float(np.mean(small - floor < NEAR_FLOOR_SIGMA * noise_s))


def looks_transmitted(img: np.ndarray, noise: float) -> bool:
    """True when the plane looks like phase contrast / transmitted light, not fluorescence."""
    return background_fraction(img, noise) < MIN_BACKGROUND_FRACTION
