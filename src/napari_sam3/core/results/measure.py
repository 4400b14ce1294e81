"""Per-object measurements of a label image, and matching against ground truth.

`measure_labels` gives the same numbers as ``skimage.measure.regionprops_table`` (the tests check it)
but from a handful of vectorised ``np.bincount`` / ``scipy.ndimage`` passes: regionprops_table loops
in Python per object and takes ~7 s for 30 000 nuclei on a 4096 px image; this takes well under 1 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from napari_sam3.core.results.columns import MEASURE_COLUMNS, PHYSICAL_COLUMNS

__all__ = [
    "count_distinct",
    "match_labels",
    "max_per_label",
    "measure_labels",
]


def count_distinct(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids (ids may have gaps: never ``labels.max()``)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0
    if labels.dtype.kind in "ui" and labels.min() >= 0 and labels.max() < 2**26:
        return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    ids = np.unique(labels)
    return int(np.count_nonzero(ids))


def measure_labels(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    *,
    scale: tuple[float, float] | None = None,
    scores: dict[int, float] | np.ndarray | None = None,
    prompts: dict[int, str] | str | None = None,
    work_labels: np.ndarray | None = None,
    work_factor: int = 1,
) -> pd.DataFrame:
    """One row per distinct non-zero id of a 2-D label image, in id order.

    Columns: label, area, equivalent_diameter, centroid_y/x, bbox_y0/x0/y1/x1 (exclusive end),
    mean/max_intensity (NaN without ``intensity``), eccentricity, score (NaN unless given), prompt;
    with ``scale`` = (sy, sx) also area_physical, equivalent_diameter_physical,
    centroid_y_physical, centroid_x_physical (units of the scale).

    ``scores`` / ``prompts``: per label id (dict) or one value for all (prompt string).

    ``work_labels`` / ``work_factor``: when ``labels`` is ``work_labels`` blown up by nearest
    neighbour ``work_factor`` times (and cropped), the same numbers are computed exactly, and
    ``work_factor**2`` times faster, from the small image (the classical counter works that way).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    h, w = labels.shape
    f = int(work_factor)
    if work_labels is None or f <= 1:
        f, small = 1, labels
    else:
        small = np.asarray(work_labels)
    lab = small.ravel()
    if lab.size and (lab.min() < 0):
        raise ValueError("labels must be non-negative")
    nmax = int(lab.max()) + 1 if lab.size else 1
    sh, sw = small.shape
    # Full-resolution rows (cols) covered by each small row (col): count, sum, sum of squares.
    ny, sy1, sy2 = _block_axis(sh, f, h)
    nx, sx1, sx2 = _block_axis(sw, f, w)

    def per_label(wy, wx):
        weights = (wy[:, None] * wx[None, :]).ravel()
        return np.bincount(lab, weights, nmax)

    area_all = per_label(ny, nx)
    ids = np.flatnonzero(area_all)
    ids = ids[ids != 0]
    n = ids.size
    area = area_all[ids]
    sy = per_label(sy1, nx)[ids]
    sx = per_label(ny, sx1)[ids]
    syy = per_label(sy2, nx)[ids]
    sxx = per_label(ny, sx2)[ids]
    sxy = per_label(sy1, sx1)[ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = sy / area, sx / area
        myy = syy / area - cy * cy
        mxx = sxx / area - cx * cx
        mxy = sxy / area - cy * cx
        # Eigenvalues of the inertia tensor as in skimage (central moments / area).
        tr, det = myy + mxx, myy * mxx - mxy * mxy
        disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
        l1, l2 = tr / 2 + disc, tr / 2 - disc
        ecc = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1), 0, 1)), 0.0)
    slices = ndi.find_objects(small)
    bbox = np.zeros((n, 4), np.int64)
    for k, i in enumerate(ids.tolist()):
        sl = slices[i - 1]
        bbox[k] = (sl[0].start * f, sl[1].start * f, min(sl[0].stop * f, h), min(sl[1].stop * f, w))
    if intensity is not None:
        inten = np.asarray(intensity)
        if inten.shape != labels.shape:
            raise ValueError(f"intensity shape {inten.shape} != labels shape {labels.shape}")
        inten = inten.astype(np.float64 if inten.dtype == np.float64 else np.float32, copy=False)
        bsum, bmax = _block_sum_max(inten, f, (sh, sw))
        mean_i = np.bincount(lab, bsum.ravel().astype(np.float64), nmax)[ids] / area
        max_i = max_per_label(bmax, small, ids, slices)
    else:
        mean_i = np.full(n, np.nan)
        max_i = np.full(n, np.nan)
    if scores is None:
        score = np.full(n, np.nan)
    elif isinstance(scores, dict):
        score = np.array([float(scores.get(int(i), np.nan)) for i in ids], dtype=np.float64)
    else:
        sc = np.asarray(scores, dtype=np.float64)
        score = sc[ids] if sc.size >= nmax else np.full(n, np.nan)
    if prompts is None or isinstance(prompts, str):
        prompt = [prompts or ""] * n
    else:
        prompt = [str(prompts.get(int(i), "")) for i in ids]
    data = {
        "label": ids.astype(np.int64),
        "area": area.astype(np.int64),
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
        "centroid_y": cy,
        "centroid_x": cx,
        "bbox_y0": bbox[:, 0],
        "bbox_x0": bbox[:, 1],
        "bbox_y1": bbox[:, 2],
        "bbox_x1": bbox[:, 3],
        "mean_intensity": mean_i,
        "max_intensity": max_i,
        "eccentricity": ecc,
        "score": score,
        "prompt": prompt,
    }
    columns = list(MEASURE_COLUMNS)
    if scale is not None:
        sy_, sx_ = float(scale[-2]), float(scale[-1])
        data["area_physical"] = area * sy_ * sx_
        data["equivalent_diameter_physical"] = np.sqrt(4 * area * sy_ * sx_ / np.pi)
        data["centroid_y_physical"] = cy * sy_
        data["centroid_x_physical"] = cx * sx_
        columns += [PHYSICAL_COLUMNS[0], "equivalent_diameter_physical", *PHYSICAL_COLUMNS[1:]]
    return pd.DataFrame(data, columns=columns)


def _block_axis(n_small: int, f: int, n_full: int):
    """Per small index: how many full-resolution indices it covers, their sum and sum of squares."""
    start = np.arange(n_small, dtype=np.float64) * f
    stop = np.minimum(start + f, n_full)
    cnt = np.maximum(stop - start, 0)

    def s1(k):
        return k * (k - 1) / 2  # sum of 0..k-1

    def s2(k):
        return (k - 1) * k * (2 * k - 1) / 6  # sum of squares of 0..k-1

    return cnt, s1(stop) - s1(start), s2(stop) - s2(start)


def _block_sum_max(img: np.ndarray, f: int, small_shape: tuple[int, int]):
    """Sum and max of each f x f block (blocks cut by the image edge use the pixels they have)."""
    if f <= 1:
        return img, img
    sh, sw = small_shape
    h, w = img.shape
    bsum = np.zeros((sh, sw), np.float64)
    bmax = np.full((sh, sw), -np.inf, np.float64)
    # f*f strided passes: numpy reduces a tiny last axis slowly, shifted views are fast.
    for dy in range(f):
        for dx in range(f):
            part = img[dy::f, dx::f]
            ph, pw = part.shape
            bsum[:ph, :pw] += part
            np.maximum(bmax[:ph, :pw], part, out=bmax[:ph, :pw])
    return bsum, bmax


def max_per_label(
    values: np.ndarray, labels: np.ndarray, ids: np.ndarray, slices=None
) -> np.ndarray:
    """Maximum of ``values`` over each label id, looping over bounding boxes.

    ``scipy.ndimage.maximum`` argsorts every pixel (seconds on a 4096 px image); cropping to each
    object's box (``ndimage.find_objects``) is ~10 us per object.
    """
    if slices is None:
        slices = ndi.find_objects(labels)
    out = np.full(len(ids), np.nan)
    for k, i in enumerate(np.asarray(ids).tolist()):
        sl = slices[i - 1] if i - 1 < len(slices) else None
        if sl is None:
            continue
        out[k] = values[sl][labels[sl] == i].max()
    return out


def match_labels(truth: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """One-to-one matching of objects by IoU (Hungarian on the IoU matrix).

    Returns tp, fp, fn, precision, recall, f1, the true and predicted counts, the relative count
    error ``(n_pred - n_true) / n_true`` and the mean IoU of the matches.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix

    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    t_ids = np.unique(t)
    t_ids = t_ids[t_ids != 0]
    p_ids = np.unique(p)
    p_ids = p_ids[p_ids != 0]
    nt, npred = t_ids.size, p_ids.size
    out = {"n_true": nt, "n_pred": npred}
    if nt and npred:
        ti = np.searchsorted(t_ids, t)
        pi = np.searchsorted(p_ids, p)
        both = (t != 0) & (p != 0)
        inter = coo_matrix(
            (np.ones(int(both.sum())), (ti[both], pi[both])), shape=(nt, npred)
        ).tocsr()
        inter.sum_duplicates()
        ta = np.bincount(ti[t != 0], minlength=nt)
        pa = np.bincount(pi[p != 0], minlength=npred)
        r, c = inter.nonzero()
        vals = np.asarray(inter[r, c]).ravel()
        ious = vals / (ta[r] + pa[c] - vals)
        keep = ious >= iou
        if iou >= 0.5:
            # Pairs with IoU > 0.5 are unique on both sides; exact ties at 0.5 are resolved
            # greedily by IoU, so no dense assignment matrix is needed.
            order = np.argsort(-ious[keep], kind="stable")
            rk, ck, vk = r[keep][order], c[keep][order], ious[keep][order]
            used_r: set[int] = set()
            used_c: set[int] = set()
            matched = []
            for a, b, v in zip(rk.tolist(), ck.tolist(), vk.tolist(), strict=True):
                if a not in used_r and b not in used_c:
                    used_r.add(a)
                    used_c.add(b)
                    matched.append(v)
            tp = len(matched)
            mean_iou = float(np.mean(matched)) if tp else 0.0
        else:
            m = np.zeros((nt, npred))
            m[r[keep], c[keep]] = ious[keep]
            rr, cc = linear_sum_assignment(-m)
            good = m[rr, cc] >= iou
            tp = int(good.sum())
            mean_iou = float(m[rr, cc][good].mean()) if tp else 0.0
    else:
        tp, mean_iou = 0, 0.0
    fp, fn = npred - tp, nt - tp
    precision = tp / npred if npred else (1.0 if nt == 0 else 0.0)
    recall = tp / nt if nt else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    out.update(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        count_error=(npred - nt) / nt if nt else float(npred > 0),
        mean_iou=mean_iou,
    )
    return out
