"""``napari-sam3 adapt``: images and their labels as `core.sam3.adapt.AdaptExample` s.

Every 2-D plane of every input (`io.readers.iter_planes`, the names ``segment`` gives its outputs)
needs ``<stem>_labels.tif`` in the labels folder, the layout ``segment`` / ``count`` and the
widget's export write. When ``<stem>_objects.csv`` is there and has a review ``status`` column,
the objects marked rejected become hard negatives instead of objects to find
(`core.results.review.rejected_labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.sam3.adapt import AdaptExample

LABELS_SUFFIX = "_labels.tif"
TABLE_SUFFIX = "_objects.csv"


def collect_examples(inputs, labels_dir: str | os.PathLike) -> list[AdaptExample]:
    """One example per plane of ``inputs``; `Sam3Error` naming the first missing label file."""
    import tifffile

    from napari_sam3.io.readers import expand_inputs, iter_planes

    folder = Path(labels_dir)
    if not folder.is_dir():
        raise Sam3Error(f"--labels {folder} is not a folder; give the folder of <stem>_labels.tif.")
    files, problems = expand_inputs(inputs)
    if problems:
        item, reason = problems[0]
        raise Sam3Error(f"{item}: {reason}.")
    examples = []
    for path in files:
        for plane in iter_planes(path):
            label_file = folder / f"{plane.stem}{LABELS_SUFFIX}"
            if not label_file.is_file():
                raise Sam3Error(
                    f"No labels for {plane.stem}: {label_file} is missing. Put each image's label "
                    f"image in --labels as <stem>{LABELS_SUFFIX} (as segment and count write them)."
                )
            labels = np.asarray(tifffile.imread(label_file))
            if labels.ndim != 2 or labels.dtype.kind not in "iub":
                raise Sam3Error(
                    f"{label_file.name} is not a 2-D label image (shape {labels.shape}, "
                    f"{labels.dtype}); give one label image per plane."
                )
            labels, rejected = _split_rejected(labels.astype(np.int64), folder, plane.stem)
            examples.append(AdaptExample(plane.stem, plane.data, labels, rejected, plane.rgb))
    if not examples:
        raise Sam3Error("No images given to adapt to.")
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
