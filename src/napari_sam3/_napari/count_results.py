"""Count results -> layer data for the Count tab: one plane, or every slice of a stack.

Runs in the worker (no Qt): label images shaped for the placed layer, centroid points, the table
(``index`` is napari's label-to-row key) and, for stacks, ids offset so they are unique across slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_sam3._napari import layers as L
from napari_sam3.io.tables import count_table


@dataclass
class PreparedCount:
    """A finished count laid out for napari: one plane (``result``) or every slice (``results``).

    ``labels`` / ``points`` / ``table``: the objects layer's data, the centroids (in the placed
    layer's data coordinates) and the features table (``export`` with ``index`` = label id first);
    ``view`` (the table the tab shows) IS ``export`` (the table written as CSV). ``labels_layer`` / ``points_layer``: the
    napari layers built from them in the worker.
    """

    labels: np.ndarray
    points: np.ndarray
    table: pd.DataFrame
    view: pd.DataFrame
    export: pd.DataFrame
    count: int
    counts: dict[str, int]
    diameter: float
    warnings: list[str]
    result: object = None  # the `CountResult` of a one-plane count
    results: list = field(default_factory=list)  # per-slice `CountResult` s of an all-slices count
    indices: list[tuple[int, ...]] = field(default_factory=list)
    slice_counts: list[int] = field(default_factory=list)
    labels_layer: object = None
    points_layer: object = None


plane_scale = L.pixel_size  # one rule for the physical columns (empty without a pixel size)


def count_name(ref: L.PlaneRef, method: str, all_slices: bool = False) -> str:
    """The Labels layer name of a count (its centroids layer adds " centroids")."""
    if all_slices:
        return f"{ref.layer_name} count ({method}) all slices"
    return f"{ref.layer_name} count ({method}){ref.slice_text()}"


def prepare_count(result, ref: L.PlaneRef) -> PreparedCount:
    """Layer data for a `CountResult` on ``ref``'s plane (runs in the worker).

    One table (`io.tables.count_table`, as ``napari-sam3 count`` writes) is the CSV, the table the
    tab shows and, with napari's ``index`` key in front, the layer's features.
    """
    export = count_table(np.asarray(result.labels), result.table, plane_scale(ref))
    if ref.index:
        export.insert(0, "slice", [slice_value(ref.index)] * len(export))
    table = export.copy()
    table.insert(0, "index", table["label"].to_numpy())
    labels = np.asarray(result.labels).reshape(ref.label_shape())
    lead = np.zeros((len(table), len(ref.index)))
    yx = table[["centroid_y", "centroid_x"]].to_numpy(dtype=float).reshape(-1, 2)
    points = np.concatenate([lead, yx], axis=1)  # in the placed layer's data coordinates
    return PreparedCount(
        labels=labels,
        points=points,
        table=table,
        view=export,
        export=export,
        count=int(result.count),
        counts=dict(result.counts),
        diameter=float(result.diameter),
        warnings=list(result.warnings),
        result=result,
    )


def slice_indices(ref: L.PlaneRef, data) -> list[tuple[int, ...]]:
    """Every slice of the stack ``ref`` belongs to: positions on the leading (non-displayed) axes."""
    shape = tuple(int(s) for s in L.level0(data).shape)
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*shape[: len(ref.index)])]


def slice_value(index: tuple[int, ...]):
    """The ``slice`` column value: the index for one leading axis, ``"t,z"`` text for more."""
    return index[0] if len(index) == 1 else ",".join(map(str, index))


def prepare_count_stack(
    results: list, indices: list[tuple[int, ...]], ref: L.PlaneRef
) -> PreparedCount:
    """Layer data for per-slice `CountResult` s (runs in the worker).

    Label ids are offset per slice so they are unique across the stack, and the table's ``label`` /
    ``index`` hold the offset ids (``slice_label`` the slice's own id), so feature rows match ids.
    """
    lead_shape = tuple(int(n) + 1 for n in np.max(np.asarray(indices), axis=0))
    total_ids = 0
    planes, exports, leads = [], [], []
    for res, idx in zip(results, indices, strict=True):
        plane = np.asarray(res.labels)
        top = max(int(plane.max(initial=0)), int(res.table["label"].max()) if len(res.table) else 0)
        csv = count_table(plane, res.table, plane_scale(ref))  # the CSV: as every count's
        csv.insert(0, "slice_label", csv["label"].to_numpy())
        csv["label"] = csv["label"].to_numpy() + total_ids
        csv.insert(0, "slice", [slice_value(idx)] * len(csv))
        exports.append(csv)
        leads.append(np.tile(np.asarray(idx, float), (len(csv), 1)))
        planes.append((plane, total_ids))
        total_ids += top
    dtype = np.int32 if total_ids <= np.iinfo(np.int32).max else np.int64
    labels = np.zeros(lead_shape + tuple(ref.shape), dtype=dtype)
    for (plane, offset), idx in zip(planes, indices, strict=True):
        labels[idx] = np.where(plane > 0, plane.astype(dtype) + offset, 0)
    export = pd.concat(exports, ignore_index=True) if exports else pd.DataFrame()
    table = export.copy()
    table.insert(0, "index", table["label"].to_numpy() if len(table) else [])
    lead = np.concatenate(leads) if leads else np.zeros((0, len(ref.index)))
    yx = table[["centroid_y", "centroid_x"]].to_numpy(dtype=float).reshape(-1, 2)
    counts: dict[str, int] = {}
    for res in results:
        for k, v in res.counts.items():
            counts[k] = counts.get(k, 0) + v
    diameters = [r.diameter for r in results if np.isfinite(r.diameter)]
    return PreparedCount(
        labels=labels,
        points=np.concatenate([lead, yx], axis=1),
        table=table,
        view=export,
        export=export,
        count=int(sum(r.count for r in results)),
        counts=counts,
        diameter=float(np.median(diameters)) if diameters else float("nan"),
        warnings=[
            f"slice {slice_value(idx)}: {w}"
            for r, idx in zip(results, indices, strict=True)
            for w in r.warnings
        ],
        results=results,
        indices=indices,
        slice_counts=[int(r.count) for r in results],
    )


def stack_summary(out: PreparedCount, max_listed: int = 50) -> str:
    """The per-slice summary: 'Total 1234 objects in 10 slices; per slice: 120, 118, ...'."""
    per = out.slice_counts
    listed = ", ".join(str(c) for c in per[:max_listed]) + (
        ", ..." if len(per) > max_listed else ""
    )
    n = len(per)
    return f"Total {out.count} objects in {n} slice{'s' if n != 1 else ''}; per slice: {listed}"
