"""Training targets from an instance label image: foreground and per-nucleus centredness.

One home for the maps the nucleus network learns: the shipped network's training
(training/train_nucleus_net.py) and fine-tuning on a user's labels both build them here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["centredness"]


def centredness(lab: np.ndarray) -> np.ndarray:
    """Per object: distance to its own edge / the object's largest such distance (0..1).

    Touching objects each get 0 on their shared edge, so the map has a valley between them.
    """
    out = np.zeros(lab.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        inside = lab[sl] == i
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        m = d[inside].max()
        if m > 0:
            out[sl][inside] = d[inside] / m
    return out
