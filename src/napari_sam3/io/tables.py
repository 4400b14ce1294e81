"""Objects tables as CSV: one row per object, the same columns for every method and caller.

The table itself is built in one place, `core.results.objects.objects_table` (O(pixels) memory,
columns `EXPORT_COLUMNS`: pixel units, bbox end exclusive, ``score`` empty where a method has none,
``*_physical`` empty without a pixel size). This module adapts the callers' inputs to it and writes
and reads the CSV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.columns import (
    COUNT_EXTRA_COLUMNS,
    EXPORT_COLUMNS,
    EXTRA_COLUMNS,
    FLOAT_COLUMNS,
    HAND_PROMPT,
    OBJECT_COLUMNS,
    PHYSICAL_COLUMNS,
)
from napari_sam3.core.results.objects import empty_objects_table
from napari_sam3.core.results.objects import objects_table as _objects_table
from napari_sam3.io.atomic import atomic_path

__all__ = [
    "EXPORT_COLUMNS",
    "EXTRA_COLUMNS",
    "candidates_table",
    "FLOAT_COLUMNS",
    "OBJECT_COLUMNS",
    "PHYSICAL_COLUMNS",
    "empty_table",
    "objects_table",
    "read_table_csv",
    "table_from_labels",
    "layer_table",
    "table_with_labels",
    "to_export_columns",
    "write_table_csv",
]


def candidates_table(
    candidates: Candidates,
    label_image: np.ndarray | None = None,
    scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """The export table of ``candidates`` (label ``i + 1`` is candidate ``i``; hidden ones kept)."""
    if len(candidates) == 0:
        return empty_table()
    return to_export_columns(candidates.table(first_id=1, label_image=label_image, scale=scale))


def objects_table(candidates, label_image=None, scale=None) -> pd.DataFrame:
    """Deprecated name of `candidates_table` (`core.results.objects.objects_table` takes labels)."""
    import warnings

    warnings.warn(
        "napari_sam3.io.tables.objects_table is now candidates_table",
        DeprecationWarning,
        stacklevel=2,
    )
    return candidates_table(candidates, label_image, scale)


def table_from_labels(
    labels: np.ndarray,
    prompt: str | dict[int, str] = "classical",
    scale: tuple[float, float] | None = None,
    scores: dict[int, float] | None = None,
) -> pd.DataFrame:
    """The export table of a plain 2-D label image (ids kept as they are, gaps allowed)."""
    return _objects_table(np.asarray(labels), prompts=prompt, scores=scores, scale=scale)


def table_with_labels(
    labels: np.ndarray,
    source: pd.DataFrame | None,
    scale=None,
    prompt: str = "",
    measured: bool = False,
    keep_hidden: bool = True,
) -> pd.DataFrame:
    """The export table of ``labels``, with ``score`` and ``prompt`` taken by label id from
    ``source`` (a counting table or napari layer features) where it has them.

    ``keep_hidden``: rows of ``source`` whose id has no pixel (hidden by overlaps) are kept.

    ``measured``: ``source`` is the `measure_labels` table of these very labels (a fresh
    `CountResult.table`), so its geometry is used instead of measuring again.
    """
    scores = prompts = ids = whole = None
    if source is not None and len(source) and "label" in source.columns:
        ids = pd.to_numeric(source["label"], errors="coerce")
        ok = ids.notna().to_numpy()
        ids = ids[ok].astype(np.int64).tolist()
        if "score" in source.columns:
            scores = dict(
                zip(ids, pd.to_numeric(source["score"], errors="coerce")[ok], strict=True)
            )
        if "prompt" in source.columns:
            prompts = {
                i: ("" if pd.isna(p) else str(p))
                for i, p in zip(ids, source["prompt"][ok], strict=True)
            }
        # objects the image no longer shows (hidden by overlaps) keep their row, as in features
        labels = np.asarray(labels)
        present = np.flatnonzero(np.bincount(labels.ravel())) if labels.size else np.zeros(0, int)
        # ... but a hand-made one without pixels was undone or erased: it is gone
        hand = {i for i, p in (prompts or {}).items() if p == HAND_PROMPT}
        hidden = sorted(set(ids) - set(present.tolist()) - {0} - hand)
        if hidden and not measured and keep_hidden:
            ids = np.union1d(present[present != 0], hidden).astype(np.int64)
            geo = source.assign(label=pd.to_numeric(source["label"], errors="coerce"))
            whole = geo[geo["label"].isin(hidden)].set_index("label")
            whole = whole[[c for c in whole.columns if c in EXPORT_COLUMNS]]
        else:
            ids = None
    if prompts and prompt:  # ids without a row in ``source`` get ``prompt``
        present = np.unique(np.asarray(labels))
        prompts = {**{int(i): prompt for i in present if i}, **prompts}
    return _objects_table(
        np.asarray(labels),
        scores=scores,
        prompts=prompts or prompt,
        scale=scale,
        ids=ids,
        whole=whole,
        measured=source if measured and source is not None and len(source) else None,
    )


def layer_table(labels: np.ndarray, features: pd.DataFrame | None, scale=None) -> pd.DataFrame:
    """The objects CSV of a napari Labels layer, the same for Export and File > Save (our writer).

    2-D: one row per id in ``labels`` as they are now (the CSV describes the TIFF beside it, as
    COCO does), score / prompt by id from ``features``; an id without a row there was painted by
    hand (`HAND_PROMPT`, empty score); a layer without an objects table gets prompt "object".
    Stacks: the layer's own table (tracks, counts).
    """
    features = pd.DataFrame(features) if features is not None else pd.DataFrame()
    if "label" not in features.columns and "index" in features.columns:
        features = features.assign(label=features["index"])
    has_rows = "label" in features.columns
    if np.asarray(labels).ndim == 2:
        source = features if has_rows else None
        prompt = HAND_PROMPT if has_rows else "object"
        return table_with_labels(labels, source, scale, prompt, keep_hidden=False)
    return to_export_columns(features) if has_rows and len(features) else None


def empty_table(physical: bool = False) -> pd.DataFrame:
    """A table with no rows and the export columns (typed). ``physical`` is kept for callers:
    the physical columns are always there."""
    return empty_objects_table()


def to_export_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A `Candidates.table` / napari ``features`` frame cut to exactly the export columns."""
    table = pd.DataFrame(table).copy()
    for col in EXPORT_COLUMNS:
        if col not in table.columns:
            table[col] = "" if col == "prompt" else np.nan
    return table[list(EXPORT_COLUMNS)].reset_index(drop=True)


def write_table_csv(
    path: str | os.PathLike, table: pd.DataFrame, *, overwrite: bool = False
) -> Path:
    """Write a table as UTF-8 CSV atomically (NaN as an empty cell; floats round-trip exactly)."""
    with atomic_path(path, overwrite) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False, na_rep="", lineterminator="\n")
    return Path(path)


def read_table_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read an objects CSV back (``prompt`` as text, empty prompt as "")."""
    table = pd.read_csv(path, dtype={"prompt": str}, keep_default_na=True)
    if "prompt" in table.columns:
        table["prompt"] = table["prompt"].fillna("")
    return table


def count_table(
    labels: np.ndarray, measured: pd.DataFrame, scale=None, prompt: str = ""
) -> pd.DataFrame:
    """The objects CSV of a count, the same from the Count tab and ``napari-sam3 count``: the
    export columns of every objects CSV, then the counter's own measurements (equivalent
    diameter, mean / max intensity, eccentricity) from ``measured`` (its `CountResult.table`)."""
    table = table_with_labels(labels, measured, scale, prompt, measured=True)
    extra = [c for c in COUNT_EXTRA_COLUMNS if c in measured.columns]
    if not extra or not len(table):
        for c in COUNT_EXTRA_COLUMNS:
            table[c] = np.nan
        return table
    by_label = measured[["label", *extra]].drop_duplicates("label")
    table = table.merge(by_label, on="label", how="left")
    for c in COUNT_EXTRA_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    return table
