"""THE objects table: one row per object of a 2-D label image, the same columns for every caller.

The widget (layer features), the batch CLI (``<stem>_objects.csv``) and the napari writer all build
their table here, from the label image, in O(pixels) memory: `measure.measure_labels` does a few
``np.bincount`` / ``ndimage.find_objects`` passes over the label image; no per-object full-size
mask and no (N, H, W) array is ever built.

Columns (`columns.EXPORT_COLUMNS`, always all of them, in this order): label, prompt, score, area,
centroid_y/x, bbox_y0/x0/y1/x1 (plane pixels, bbox end exclusive), visible_area (pixels the object
owns in the label image), area_physical, centroid_y/x_physical (NaN when the pixel size is unknown).
``area`` equals ``visible_area`` unless ``whole`` gives the area of an object's whole mask (SAM3
candidates that overlap: the label image shows only the winner on each pixel).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_sam3.core.results.columns import EXPORT_COLUMNS, FLOAT_COLUMNS
from napari_sam3.core.results.measure import measure_labels

__all__ = ["empty_objects_table", "objects_table"]

_GEOMETRY = ("area", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")


def objects_table(
    labels: np.ndarray,
    *,
    scores: dict[int, float] | None = None,
    prompts: dict[int, str] | str | None = None,
    scale: tuple[float, float] | None = None,
    ids: np.ndarray | None = None,
    whole: pd.DataFrame | None = None,
    offset: tuple[int, int] = (0, 0),
    work_labels: np.ndarray | None = None,
    work_factor: int = 1,
    measured: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The objects table of a 2-D label image (ids kept as they are; gaps allowed).

    Parameters
    ----------
    scores, prompts : per label id (a dict), or one prompt for every object (a string).
    scale : (sy, sx) physical pixel size; fills the ``*_physical`` columns.
    ids : the rows to give, in order (default: every non-zero id in the image). An id absent from
        the image gets a row with ``visible_area`` 0 (a candidate hidden by others).
    whole : per-object geometry of whole masks (index = label id; any of area, centroid_y/x,
        bbox_*): replaces what the label image shows for those ids.
    offset : (row, col) of the label image's origin in the plane (a tile of a larger plane).
    work_labels, work_factor : a label image ``work_factor`` times smaller that ``labels`` is the
        nearest-neighbour blow-up of (see `measure_labels`): same numbers, computed faster.
    measured : the `measure_labels` table of ``labels`` when the caller has it already (a
        `CountResult.table`): not measured twice.
    """
    m = measured
    if m is None:
        m = measure_labels(labels, work_labels=work_labels, work_factor=work_factor)
    m = m.set_index("label")
    if ids is None:
        ids = m.index.to_numpy()
    ids = np.asarray(ids, dtype=np.int64)
    n = ids.size
    if n == 0:
        return empty_objects_table()
    got = m.reindex(ids)
    visible = got["area"].fillna(0).to_numpy(np.int64)
    data: dict[str, object] = {"label": ids}
    if prompts is None or isinstance(prompts, str):
        data["prompt"] = [prompts or ""] * n
    else:
        data["prompt"] = [str(prompts.get(int(i), "")) for i in ids]
    if scores is None:
        data["score"] = np.full(n, np.nan)
    else:
        data["score"] = np.array([float(scores.get(int(i), np.nan)) for i in ids], np.float64)
    geo = {c: got[c].to_numpy(np.float64) for c in _GEOMETRY}
    geo["area"] = visible.astype(np.float64)
    if whole is not None and len(whole):
        w = pd.DataFrame(whole).reindex(ids)
        for c in _GEOMETRY:
            if c in w.columns:
                vals = w[c].to_numpy(np.float64)
                geo[c] = np.where(np.isnan(vals), geo[c], vals)
    oy, ox = int(offset[0]), int(offset[1])
    geo["centroid_y"] = geo["centroid_y"] + oy
    geo["centroid_x"] = geo["centroid_x"] + ox
    for c, o in (("bbox_y0", oy), ("bbox_y1", oy), ("bbox_x0", ox), ("bbox_x1", ox)):
        geo[c] = np.where(np.isnan(geo[c]), 0, geo[c] + o)
    geo["area"] = np.nan_to_num(geo["area"])
    for c in _GEOMETRY:
        data[c] = geo[c] if c in FLOAT_COLUMNS else geo[c].astype(np.int64)
    data["visible_area"] = visible
    if scale is not None:
        sy, sx = float(scale[-2]), float(scale[-1])
        data["area_physical"] = data["area"] * sy * sx
        data["centroid_y_physical"] = data["centroid_y"] * sy
        data["centroid_x_physical"] = data["centroid_x"] * sx
    else:
        for c in ("area_physical", "centroid_y_physical", "centroid_x_physical"):
            data[c] = np.full(n, np.nan)
    return pd.DataFrame(data, columns=list(EXPORT_COLUMNS))


def empty_objects_table() -> pd.DataFrame:
    """No rows, the export columns, typed."""
    return pd.DataFrame(
        {
            c: pd.Series(
                [], dtype=object if c == "prompt" else (float if c in FLOAT_COLUMNS else np.int64)
            )
            for c in EXPORT_COLUMNS
        }
    )
