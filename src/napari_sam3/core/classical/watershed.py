"""Basins of a seed surface: steepest-ascent assignment and merging of shallow neighbours."""

from __future__ import annotations

import numpy as np

__all__ = ["ascend_basins", "merge_shallow_basins"]


def ascend_basins(surf: np.ndarray, markers: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Watershed basins by steepest ascent: the marker each ``region`` pixel reaches by always
    stepping to its highest 8-neighbour (pointer jumping, ~3x faster than a flooding watershed;
    basins agree on ~96 % of pixels, the rest are boundary pixels). Basins of unmarked maxima
    take the label of a labelled neighbour. Returns the labels of the region's pixels (C order).
    """
    h, w = surf.shape
    W = w + 2
    s = np.full((h + 2, W), -np.inf, np.float32)
    np.copyto(s[1:-1, 1:-1], surf, where=region)
    best = s[1:-1, 1:-1].copy()
    off = np.zeros((h, w), np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                v = s[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
                b = v > best
                np.copyto(best, v, where=b)
                np.copyto(off, dy * W + dx, where=b)
    del s, best
    mk = np.zeros((h + 2, W), np.int32)
    mk[1:-1, 1:-1] = markers
    mk = mk.ravel()
    rp = np.flatnonzero(np.pad(region, 1))  # region pixels, padded flat indices
    parent = np.arange(mk.size, dtype=np.int32)
    parent[rp] = rp + off[region]
    seeds = np.flatnonzero(mk)
    parent[seeds] = seeds
    p = parent[rp]
    for _ in range(64):  # pointer jumping: path lengths double each round
        q = parent[p]
        if np.array_equal(q, p):
            break
        parent[rp] = q
        p = q
    lab = mk[p]
    todo = np.flatnonzero(lab == 0)
    if todo.size:  # basins of unmarked maxima: grow labelled neighbours into them
        full = np.zeros(mk.size, np.int32)
        full[rp] = lab
        nbr = np.array([dy * W + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
        idx = rp[todo]
        for _ in range(4 * (h + w)):
            got = full[idx[:, None] + nbr].max(axis=1)
            full[idx] = got
            left = got == 0
            if not left.any() or left.all():
                break
            idx = idx[left]
        lab = full[rp]
    return lab


def merge_shallow_basins(
    lab: np.ndarray, surf: np.ndarray, peak: np.ndarray, pos: np.ndarray, h: float, dist: float
) -> np.ndarray:
    """Merge neighbouring basins whose pass (highest boundary point) is within ``h`` x the lower
    peak of that peak and whose seeds (``pos``, row/col per label) are closer than ``dist``: a dip
    that shallow between seeds that close is texture, not the contact between two nuclei."""

    ka, kb, sad = [], [], []
    for a, b, sa, sb in (
        (lab[:, :-1], lab[:, 1:], surf[:, :-1], surf[:, 1:]),
        (lab[:-1], lab[1:], surf[:-1], surf[1:]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        la, lb = a[m], b[m]
        ka.append(np.minimum(la, lb))
        kb.append(np.maximum(la, lb))
        sad.append(np.minimum(sa[m], sb[m]))
    ka, kb, sad = np.concatenate(ka), np.concatenate(kb), np.concatenate(sad)
    if ka.size == 0:
        return lab
    n = peak.size
    key = ka.astype(np.int64) * n + kb
    order = np.lexsort((sad, key))
    key, sad = key[order], sad[order]
    last = np.r_[key[1:] != key[:-1], True]
    key, sad = key[last], sad[last]  # highest pass between each pair
    ka, kb = key // n, key % n
    low = np.minimum(peak[ka], peak[kb])
    join = (sad >= (1 - h) * low) & (low > 0)
    join &= ((pos[ka] - pos[kb]) ** 2).sum(1) < dist * dist
    return join_pairs(lab, ka, kb, join, n)


def merge_convex_pairs(
    lab: np.ndarray, dt: np.ndarray, pos: np.ndarray, dist: float, tol: float
) -> np.ndarray:
    """Merge neighbouring basins whose seeds (``pos``, row/col per label, in ``lab``'s frame) are
    closer than ``dist`` unless the distance transform ``dt`` of the mask dips by more than
    ``tol`` px below the lower seed's value on the straight line between them.

    Why: the distance transform of a convex object is a concave function, so it never dips
    between two of its points; two overlapping round nuclei form a neck, where it does. A
    textured single nucleus (two brightness peaks, no neck) stays whole; an overlapping pair
    (seeds closer than the usual separation) is kept apart.
    """

    n = pos.shape[0]
    keys = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])):
        m = (a != b) & (a > 0) & (b > 0)
        la, lb = a[m].astype(np.int64), b[m].astype(np.int64)
        keys.append(np.minimum(la, lb) * n + np.maximum(la, lb))
    key = np.unique(np.concatenate(keys))
    if key.size == 0:
        return lab
    ka, kb = key // n, key % n
    pa, pb = pos[ka], pos[kb]
    near = ((pa - pb) ** 2).sum(1) < dist * dist
    if not near.any():
        return lab
    ka, kb, pa, pb = ka[near], kb[near], pa[near], pb[near]
    t = np.linspace(0.0, 1.0, 17)[None, :, None]
    pts = pa[:, None, :] * (1 - t) + pb[:, None, :] * t  # (pairs, samples, 2)
    r = np.clip(np.rint(pts[..., 0]).astype(int), 0, dt.shape[0] - 1)
    c = np.clip(np.rint(pts[..., 1]).astype(int), 0, dt.shape[1] - 1)
    line = dt[r, c]
    dip = np.minimum(line[:, 0], line[:, -1]) - line.min(1)
    join = dip <= tol
    return join_pairs(lab, ka, kb, join, n)


def join_pairs(lab: np.ndarray, ka, kb, join: np.ndarray, n: int) -> np.ndarray:
    """``lab`` with every pair (``ka[i]``, ``kb[i]``) where ``join[i]`` merged, transitively; each
    merged group takes the smallest label of its members."""
    if not join.any():
        return lab
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(join.sum()), (ka[join], kb[join])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    first = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    remap = first[comp].astype(np.int32)
    remap[0] = 0
    return remap[lab]
