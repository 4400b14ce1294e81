"""Object edges at half height: masks that fit the nucleus, not its blur halo.

A uniformly stained object seen through the optics is a plateau convolved with the point spread
function; its true edge is where the intensity is half-way between the background and the plateau.
A global automatic threshold (Li, Otsu) sits much lower for bright objects, so their masks take in
the halo and touching objects merge. Each object keeps its pixels above EDGE_FRACTION of its own
plateau (a high percentile of it, robust to a few hot pixels) over the corrected background (0).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["EDGE_FRACTION", "fit_edges", "per_label_quantile"]

EDGE_FRACTION = 0.5  # the edge of a blurred step lies at half its height
PLATEAU_Q = 0.5  # the object's plateau: the median of its interior (texture and hot pixels aside)
LEVELS = 256  # quantiles are read from per-object histograms of this many levels
INTERIOR = 0.15  # the interior: this many diameters from the mask edge, past the blur halo


def per_label_quantile(lab: np.ndarray, values: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of ``values`` in each label (index = label id; 0 for absent ids), to
    1/LEVELS of the value range (plenty for an edge at half height).

    Per-label histograms from one bincount of (label, level) keys: O(pixels), no sort.
    """
    m = lab > 0
    lv, vv = lab[m].astype(np.int64), values[m]
    n = int(lab.max()) + 1
    out = np.zeros(n, np.float32)
    if lv.size == 0:
        return out
    lo, hi = float(vv.min()), float(vv.max())
    step = (hi - lo) / LEVELS or 1.0
    level = np.minimum(((vv - lo) / step).astype(np.int64), LEVELS - 1)
    hist = np.bincount(lv * LEVELS + level, minlength=n * LEVELS).reshape(n, LEVELS)
    cum = np.cumsum(hist, axis=1)
    counts = cum[:, -1]
    have = counts > 0
    target = np.floor(q * (counts[have] - 1))[:, None]
    first = (cum[have] > target).argmax(axis=1)  # the level holding the q-th value
    out[have] = lo + (first + 0.5) * step
    return out


def fit_edges(lab: np.ndarray, corr: np.ndarray, diameter: float | None = None) -> np.ndarray:
    """``lab`` with each object cut to its pixels above EDGE_FRACTION of its plateau in ``corr``
    (the background-corrected image, background ~ 0); holes inside an object are filled again.

    The plateau is the median of the object's interior, INTERIOR x ``diameter`` or more from its
    mask edge, where neither the blur nor the smoothing reaches (the whole object when given no
    diameter or when it is too thin to have an interior).
    """
    if not lab.any():
        return lab
    fg = lab > 0
    plateau = None
    if diameter is not None:
        r = max(1, int(round(INTERIOR * diameter)))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        inner = ndi.binary_erosion(fg, structure=(yy * yy + xx * xx) <= r * r)
        plateau = per_label_quantile(np.where(inner, lab, 0), corr, PLATEAU_Q)
    n = int(lab.max()) + 1
    if plateau is None or plateau.size < n or not (plateau[1:] > 0).all():
        whole = per_label_quantile(lab, corr, PLATEAU_Q)
        if plateau is None:
            plateau = whole
        else:
            got = np.zeros(n, np.float32)
            got[: plateau.size] = plateau
            plateau = np.where(got > 0, got, whole)
    keep = fg & (corr >= np.float32(EDGE_FRACTION) * plateau[lab])
    keep = ndi.binary_fill_holes(keep) & fg  # a dim centre is still the object
    return np.where(keep, lab, 0).astype(lab.dtype, copy=False)
