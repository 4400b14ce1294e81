"""``napari-sam3 adapt``: images and their labels as `core.sam3.adapt.AdaptExample` s.

Every 2-D plane of every input needs ``<stem>_labels.tif`` in the labels folder
(`batch.labelled_inputs`, shared with ``train``). When ``<stem>_objects.csv`` is there and has a
review ``status`` column, the objects marked rejected become hard negatives instead of objects to
find (`core.results.review.rejected_labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_sam3.batch.labelled_inputs import labelled_inputs
from napari_sam3.core.sam3.adapt import AdaptExample

TABLE_SUFFIX = "_objects.csv"


def collect_examples(inputs, labels_dir: str | os.PathLike) -> list[AdaptExample]:
    """One example per plane of ``inputs``; `Sam3Error` naming the first missing label file."""
    folder = Path(labels_dir)
    examples = []
    for item in labelled_inputs(inputs, folder, every_plane=True):
        labels, rejected = _split_rejected(item.labels.astype(np.int64), folder, item.stem)
        examples.append(AdaptExample(item.stem, item.image, labels, rejected, item.rgb))
    return examples


def _split_rejected(labels: np.ndarray, folder: Path, stem: str):
    """(accepted labels, rejected labels or None) from the objects table's review status."""
    table_file = folder / f"{stem}{TABLE_SUFFIX}"
    if not table_file.is_file():
        return labels, None
    from napari_sam3.core.results.review import rejected_labels
    from napari_sam3.io.tables import read_table_csv

    gone = rejected_labels(read_table_csv(table_file))
    if not gone.size:
        return labels, None
    is_rejected = np.isin(labels, gone)
    return np.where(is_rejected, 0, labels), np.where(is_rejected, labels, 0)
