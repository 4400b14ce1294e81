"""Splitting touching objects: seeded watershed on the clumps, then basins merged again where
the dip between them is shallow or the mask has no neck between their seeds."""

from __future__ import annotations

import numpy as np

from napari_sam3.core.classical.seeds import find_seeds, seed_surface
from napari_sam3.core.classical.watershed import (
    ascend_basins,
    merge_convex_pairs,
    merge_shallow_basins,
)

__all__ = ["split_touching"]

# Basins are merged again when the pass between them is within MERGE_H of the lower peak and
# their seeds are closer than MERGE_DIST x the diameter (a texture bump, not a second nucleus).
MERGE_H = 0.01
MERGE_DIST = 0.5
# Seeds closer than SEED_SEPARATION x the diameter (find_seeds' own minimum is smaller) stay two
# objects only where the mask has a neck between them: its distance transform dips by more than
# NECK_TOL px (the pixel grid's own error) on the line between them (`merge_convex_pairs`). The
# distance transform is the seed surface's own (of the stricter seed mask, where touching nuclei
# with dimmer rims already come apart; no second transform).
SEED_SEPARATION = 0.5
NECK_TOL = 1.0


def split_touching(
    mask: np.ndarray,
    lab: np.ndarray,
    d: float,
    corr: np.ndarray,
    mode: str = "shape+intensity",
    blob: bool = False,
) -> np.ndarray:
    """Seeded watershed of the components of ``lab`` that hold two or more seeds (`core.seeds`);
    shallow-dip basins are merged (`merge_shallow_basins`). ``d`` is the diameter at this
    resolution, ``corr`` the corrected image, ``blob`` adds a -LoG seed term (small objects)."""
    surf, inside, dt = seed_surface(mask, corr, d, mode, blob)
    peaks, markers, nm = find_seeds(surf, inside, d)
    if nm == 0:
        return lab
    # Only components holding two or more seeds need a watershed; the others keep their own id
    # (this halves the work on typical images).
    seeds_per = np.bincount(lab[peaks], minlength=lab.max() + 1)
    multi = seeds_per >= 2
    multi[0] = False
    clump = multi[lab]
    out = np.where(clump, 0, lab + nm).astype(np.int32)
    out[~mask] = 0
    if clump.any():
        rows, cols = np.flatnonzero(clump.any(axis=1)), np.flatnonzero(clump.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub_mask = clump[y0:y1, x0:x1]
        sub_markers = np.where(sub_mask, markers[y0:y1, x0:x1], 0)
        sub_surf = surf[y0:y1, x0:x1]
        ws = np.zeros(sub_mask.shape, np.int32)
        ws[sub_mask] = ascend_basins(sub_surf, sub_markers, sub_mask)
        if MERGE_H > 0:
            peak, pos = _seed_heights_and_positions(surf, peaks, markers, nm)
            ws = merge_shallow_basins(ws, sub_surf, peak, pos, MERGE_H, MERGE_DIST * d)
        if SEED_SEPARATION > 0:
            peak, pos = _seed_heights_and_positions(surf, peaks, markers, nm)
            local = pos - np.array([y0, x0], np.float64)
            sub_dt = dt[y0:y1, x0:x1]
            ws = merge_convex_pairs(ws, sub_dt, local, SEED_SEPARATION * d, NECK_TOL)
        out[y0:y1, x0:x1][sub_mask] = ws[sub_mask]
    return out


def _seed_heights_and_positions(
    surf: np.ndarray, peaks: np.ndarray, markers: np.ndarray, nm: int
) -> tuple[np.ndarray, np.ndarray]:
    """Surface height of each seed and its mean (row, col), indexed by marker id (0 unused)."""
    peak = np.zeros(nm + 1, np.float32)
    peak[markers[peaks]] = surf[peaks]
    py, px = np.nonzero(peaks)
    ml = markers[py, px]
    cnt = np.maximum(np.bincount(ml, minlength=nm + 1), 1)
    pos = np.stack([np.bincount(ml, py, nm + 1), np.bincount(ml, px, nm + 1)], 1) / cnt[:, None]
    return peak, pos
