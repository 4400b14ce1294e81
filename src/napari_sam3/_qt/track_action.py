"""The Segment tab's "Track through slices": the typed concepts tracked along the stack axis.

The tracked axis is the one just before the displayed plane (z or t of a (Z|T, Y, X) image); other
leading axes stay at the slice shown when the run starts. The result is one Labels layer over that
axis, "SAM3 track: <concepts>", with one id per tracked object in every slice. Its ``features`` has
one row per track (napari looks features up by label id); the per-(frame, object) table of
`core.stack_tracking` is kept in ``layer.metadata["sam3_track_table"]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._qt.worker import Job, notify_error
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import concepts_typed

TABLE_KEY = "sam3_track_table"


def can_track(image) -> bool:
    """Whether ``image`` has an axis to track along (at least one besides the plane)."""
    return image is not None and int(image.ndim) >= 3


def stack_ref(ref: L.PlaneRef) -> L.PlaneRef:
    """``ref`` with the tracked axis (the last leading one) at 0: `L.placed_geometry` of it puts a
    (1, .., 1, T, Y, X) array over the whole axis."""
    return dataclasses.replace(ref, index=(*ref.index[:-1], 0))


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


def start_tracking(tab) -> Job | None:
    """Submit a tracking run of the tab's concepts on its chosen image; None if it cannot start."""
    from napari_sam3.core.tracking.stack_tracking import iter_track_stack

    image = tab.image_layer()
    try:
        ref = tab.current_ref(image)
        if not can_track(image):
            raise Sam3Error("Track through slices needs a z or t stack; use Run on a single plane.")
    except Sam3Error as exc:
        notify_error(exc)
        return None
    try:
        concepts = concepts_typed(tab.concepts_edit.text())
    except Sam3Error as exc:  # e.g. digits only: say what SAM3 needs
        notify_error(exc)
        return None
    if not concepts:
        notify_error(Sam3Error("Type a concept to track (e.g. 'nucleus')."))
        return None
    data, pre, holder = image.data, tab.preprocessing(), tab.holder
    source, device = tab.model_settings()
    min_score = tab.threshold_slider.value() / 100.0
    what = ", ".join(concepts)
    name = f"SAM3 track: {what}"
    placed = stack_ref(ref)

    def make():
        engine = yield from holder.iter_engine(source, device)
        yield Progress("Reading the stack...")
        level0 = L._level0(data)
        stack = np.asarray(level0[ref.index[:-1]] if len(ref.index) > 1 else level0)
        # start on the slice the user is looking at: its objects get ids first, then both ways
        result = yield from iter_track_stack(
            engine,
            stack,
            concepts,
            preprocessing=pre,
            rgb=ref.rgb,
            min_score=min_score,
            start=int(ref.index[-1]),
        )
        shape = (1,) * (len(ref.index) - 1) + result.labels.shape
        kwargs = {
            "name": name,
            "features": track_features(result.table),
            "metadata": {TABLE_KEY: result.table, "sam3_track_meta": result.meta},
            **L.placed_geometry(placed),
        }
        return result, B.labels_layer(result.labels.reshape(shape), kwargs)

    def done(out) -> None:
        result, layer = out
        if not tab._image_still_valid(image, ref):
            return
        tab.adder.add(layer)
        tab.set_status(
            f"Tracked {result.n_tracks} object(s) through {result.meta['frames']} slices "
            f"({result.meta['seconds_per_frame']:.1f} s per slice) in '{layer.name}'."
        )

    return tab.submit(
        make, f"SAM3: track {what}", "track", done, status=f"Tracking '{what}' through the stack..."
    )
