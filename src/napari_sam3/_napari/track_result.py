"""Track through slices: which images can be tracked, and the tracked result as napari layer data.

The tracked axis is the one just before the displayed plane (z or t of a (Z|T, Y, X) image); other
leading axes stay at the slice shown when the run starts. The result is one Labels layer over that
axis, "SAM3 track: <concepts>", with one id per tracked object in every slice. Its ``features`` has
one row per track (napari looks features up by label id); the per-(frame, object) table of
`core.tracking.stack_tracking` is kept in ``layer.metadata["sam3_track_table"]``. No Qt.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from napari_sam3._napari import layers as L

TABLE_KEY = "sam3_track_table"


def can_track(image) -> bool:
    """Whether ``image`` has an axis to track along (at least one besides the plane)."""
    return image is not None and int(image.ndim) >= 3


def stack_ref(ref: L.PlaneRef) -> L.PlaneRef:
    """``ref`` with the tracked axis (the last leading one) at 0: `L.placed_geometry` of it puts a
    (1, .., 1, T, Y, X) array over the whole axis."""
    return dataclasses.replace(ref, index=(*ref.index[:-1], 0))


def read_stack(data, ref: L.PlaneRef) -> np.ndarray:
    """The stack along the tracked axis of ``ref``'s image (other leading axes at the slice shown)."""
    full = L.level0(data)
    return np.asarray(full[ref.index[:-1]] if len(ref.index) > 1 else full)


def stack_labels_layer(labels: np.ndarray, ref: L.PlaneRef, kwargs: dict):
    """A Labels layer (worker-safe) of a tracked ``(T, Y, X)`` result over ``ref``'s image."""
    from napari_sam3._napari.layer_builder import labels_layer

    shape = (1,) * (len(ref.index) - 1) + labels.shape
    return labels_layer(labels.reshape(shape), kwargs)


def track_features(table: pd.DataFrame) -> pd.DataFrame:
    """One row per track: napari's ``index`` (= label), prompt, frames seen, scores and area."""
    if len(table) == 0:
        return pd.DataFrame(
            {"index": pd.Series(dtype=np.int64), "label": pd.Series(dtype=np.int64)}
        )
    grouped = table.groupby("label", sort=True)
    out = grouped.agg(
        prompt=("prompt", "first"),
        first_frame=("frame", "min"),
        last_frame=("frame", "max"),
        frames=("frame", "nunique"),
        mean_score=("score", "mean"),
        max_score=("score", "max"),
        mean_area=("area", "mean"),
    ).reset_index()
    out.insert(0, "index", out["label"])
    return out


def track_layer_kwargs(result, ref: L.PlaneRef, name: str, features=None) -> dict:
    """``add_labels`` kwargs of a tracking result (`iter_track_stack`, or `iter_track_objects`
    with its own ``features``) placed over ``ref`` 's stack."""
    return {
        "name": name,
        "features": track_features(result.table) if features is None else features,
        "metadata": {TABLE_KEY: result.table, "sam3_track_meta": result.meta},
        **L.placed_geometry(stack_ref(ref)),
    }
