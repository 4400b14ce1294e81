"""Run the nucleus network over a plane of any size: the two probability maps at its scale."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from napari_sam3.core.learned.network import NucleusNet
from napari_sam3.core.learned.scaling import resize
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end

__all__ = ["TILE", "iter_predict_maps", "predict_maps"]

TILE = 1024  # network-scale pixels per tile side; bounds memory on 4096^2+ planes
MARGIN = 32  # context on each side of a tile (two canonical diameters): no seams


def predict_maps(net: NucleusNet, norm: np.ndarray, factor: float):
    """Synchronous `iter_predict_maps`."""
    return run_to_end(iter_predict_maps(net, norm, factor))


def iter_predict_maps(
    net: NucleusNet, norm: np.ndarray, factor: float
) -> ProgressGen[tuple[torch.Tensor, torch.Tensor]]:
    """(foreground, centredness) probabilities of normalised plane ``norm`` resized by ``factor``;
    yields `Progress` per tile (a run is cancelled between tiles)."""
    h, w = norm.shape
    shape = (max(8, round(h * factor)), max(8, round(w * factor)))
    x = resize(norm, shape)
    out = torch.empty((2, *shape), dtype=torch.float32)
    m = net.multiple
    corners = [(y0, x0) for y0 in range(0, shape[0], TILE) for x0 in range(0, shape[1], TILE)]
    for k, (y0, x0) in enumerate(corners):
        if len(corners) > 1:
            yield Progress(f"Nucleus model: tile {k + 1}/{len(corners)}", k, len(corners))
        with torch.inference_mode():
            y1, x1 = min(y0 + TILE, shape[0]), min(x0 + TILE, shape[1])
            a0, b0 = max(0, y0 - MARGIN), max(0, x0 - MARGIN)
            a1, b1 = min(shape[0], y1 + MARGIN), min(shape[1], x1 + MARGIN)
            tile = x[a0:a1, b0:b1]
            th, tw = tile.shape
            ph, pw = (-th) % m, (-tw) % m
            t4 = tile.reshape(1, 1, th, tw)
            if ph or pw:  # reflect needs the pad < size; replicate is fine for tiny planes
                mode = "reflect" if (ph < th and pw < tw) else "replicate"
                t4 = F.pad(t4, (0, pw, 0, ph), mode=mode)
            p = torch.sigmoid(net(t4.contiguous(memory_format=torch.channels_last)))
            p = p[0, :, :th, :tw]
            out[:, y0:y1, x0:x1] = p[:, y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
    return out[0], out[1]
