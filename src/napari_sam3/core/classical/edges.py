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
PLATEAU_Q = 0.9  # the object's plateau: its 90th percentile (texture and hot pixels aside)


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


def fit_edges(lab: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """``lab`` with each object cut to its pixels above EDGE_FRACTION of its plateau in ``corr``
    (the background-corrected image, background ~ 0); holes inside an object are filled again."""
    if not lab.any():
        return lab
    plateau = per_label_quantile(lab, corr, PLATEAU_Q)
    keep = (lab > 0) & (corr >= np.float32(EDGE_FRACTION) * plateau[lab])
    keep = ndi.binary_fill_holes(keep) & (lab > 0)  # a dim centre is still the object
    return np.where(keep, lab, 0).astype(lab.dtype, copy=False)
