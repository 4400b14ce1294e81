"""The per-object table (CSV): one row per object, the same columns for every method.

Columns: `core.columns.OBJECT_COLUMNS` (pixel units, bbox end exclusive, ``score`` empty where a
method has none), then those of `core.columns.EXTRA_COLUMNS` the table has: ``visible_area`` (pixels
the object still owns in the label image after overlaps) and, when the pixel size is known, the
``*_physical`` columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.columns import (
    EXTRA_COLUMNS,
    FLOAT_COLUMNS,
    OBJECT_COLUMNS,
    PHYSICAL_COLUMNS,
)
from napari_sam3.io.atomic import atomic_path


def objects_table(
    candidates: Candidates,
    label_image: np.ndarray | None = None,
    scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """The export table of ``candidates`` (label ``i + 1`` is candidate ``i``)."""
    if len(candidates) == 0:
        return empty_table(scale is not None)
    full = candidates.table(first_id=1, label_image=label_image, scale=scale)
    return to_export_columns(full)


def table_from_labels(
    labels: np.ndarray, prompt: str = "classical", scale: tuple[float, float] | None = None
) -> pd.DataFrame:
    """The export table of a plain 2-D label image (ids kept as they are, gaps allowed)."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return empty_table(scale is not None)
    cands = Candidates.from_label_image(labels, prompt=prompt)
    table = to_export_columns(cands.table(label_image=_relabel(labels, ids), scale=scale))
    table["label"] = ids.astype(np.int64)
    return table


def empty_table(physical: bool = False) -> pd.DataFrame:
    """A table with no rows and the export columns (typed)."""
    cols = list(OBJECT_COLUMNS) + ["visible_area"]
    if physical:
        cols += PHYSICAL_COLUMNS
    return pd.DataFrame(
        {
            c: pd.Series(
                [], dtype=object if c == "prompt" else (float if c in FLOAT_COLUMNS else np.int64)
            )
            for c in cols
        }
    )


def to_export_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Order (and subset) a `Candidates.table` / napari ``features`` frame to the export columns."""
    table = pd.DataFrame(table).copy()
    for col in OBJECT_COLUMNS:
        if col not in table.columns:
            table[col] = np.nan if col != "prompt" else ""
    cols = list(OBJECT_COLUMNS) + [c for c in EXTRA_COLUMNS if c in table.columns]
    cols += [c for c in table.columns if c not in cols and c not in ("kind", "index")]
    return table[cols].reset_index(drop=True)


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


def _relabel(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map ids to 1..n (the order `Candidates.from_label_image` uses)."""
    if ids.size == 0:
        return np.zeros(labels.shape, np.uint32)
    lut = np.zeros(int(ids.max()) + 1, np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    return lut[labels]
