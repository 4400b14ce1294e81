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
INTERIOR = 0.15  # the interior: this many diameters from the mask edge, past the blur halo


def per_label_quantile(lab: np.ndarray, values: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of ``values`` in each label (index = label id; 0 for absent ids)."""
    m = lab > 0
    lv, vv = lab[m], values[m]
    order = np.lexsort((vv, lv))
    lv, vv = lv[order], vv[order]
    n = int(lab.max()) + 1
    counts = np.bincount(lv, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.zeros(n, np.float32)
    have = counts > 0
    pos = starts[have] + np.floor(q * (counts[have] - 1)).astype(np.int64)
    out[have] = vv[pos]
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
    plateau = per_label_quantile(lab, corr, PLATEAU_Q)
    if diameter is not None:
        depth = ndi.distance_transform_edt(fg)
        core = np.where(depth >= max(1.0, INTERIOR * diameter), lab, 0)
        inner = per_label_quantile(core, corr, PLATEAU_Q) if core.any() else plateau[:0]
        n = min(inner.size, plateau.size)
        has = inner[:n] > 0
        plateau[:n][has] = inner[:n][has]
    keep = fg & (corr >= np.float32(EDGE_FRACTION) * plateau[lab])
    keep = ndi.binary_fill_holes(keep) & fg  # a dim centre is still the object
    return np.where(keep, lab, 0).astype(lab.dtype, copy=False)
