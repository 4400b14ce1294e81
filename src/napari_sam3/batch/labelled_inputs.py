"""Images and their label files, read once for ``napari-sam3 train`` and ``napari-sam3 adapt``.

The layout is the one ``segment``, ``count`` and the widget's Export write: every 2-D plane of
every input (`io.readers.iter_planes`, which names a stack's planes ``<stem>_z003``) has
``<stem>_labels.tif`` in one labels folder, so a corrected output folder is training data as it
is. Both commands get the same checks and the same error messages from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error

__all__ = ["LABELS_SUFFIX", "LabelledInput", "labelled_inputs"]

LABELS_SUFFIX = "_labels.tif"


@dataclass
class LabelledInput:
    """One plane and its label image (instance ids, 0 = background)."""

    file: Path  # the input file the plane comes from
    stem: str  # the plane's output name (``<file stem>`` or ``<file stem>_z003``)
    image: np.ndarray
    labels: np.ndarray
    rgb: bool | None = None

    @property
    def name(self) -> str:
        return f"{self.file.name}:{self.stem}"


def labelled_inputs(
    inputs, labels_dir: str | os.PathLike, *, every_plane: bool
) -> list[LabelledInput]:
    """Every plane of ``inputs`` with its ``<stem>_labels.tif`` from ``labels_dir``.

    ``every_plane``: a plane without a labels file is an error (adapt); otherwise it is left out
    (train), and only finding none at all is an error. Everything is read before anything is
    trained, so bad input stops the command before it writes.
    """
    from napari_sam3.io.readers import expand_inputs, iter_planes

    folder = Path(labels_dir)
    if not folder.is_dir():
        raise Sam3Error(
            f"--labels {folder}: no such folder; give the folder with the <stem>{LABELS_SUFFIX} "
            "files (where `napari-sam3 count`, `segment` or Export wrote them)."
        )
    files, problems = expand_inputs(inputs)
    if problems:
        item, reason = problems[0]
        raise Sam3Error(f"{item}: {reason}")
    out, looked = [], []
    for path in files:
        for plane in iter_planes(path):
            label_file = folder / f"{plane.stem}{LABELS_SUFFIX}"
            looked.append(label_file.name)
            if label_file.is_file():
                labels = _plane_labels(label_file)
                out.append(LabelledInput(Path(path), plane.stem, plane.data, labels, plane.rgb))
            elif every_plane:
                raise Sam3Error(
                    f"No labels for {plane.stem}: {label_file} is missing. Put each image's label "
                    f"image in --labels as <stem>{LABELS_SUFFIX} (as segment and count write them)."
                )
    if not out:
        shown = ", ".join(looked[:3]) + (" ..." if len(looked) > 3 else "")
        raise Sam3Error(
            f"No labels found in {folder} (looked for {shown or 'nothing: no images'}); give the "
            f"folder where `napari-sam3 count` or Export wrote <stem>{LABELS_SUFFIX}."
        )
    return out


def _plane_labels(path: Path) -> np.ndarray:
    """The 2-D integer label image in ``path`` (a single-plane stack is squeezed)."""
    from napari_sam3.io.tiff import read_labels_tiff

    labels = read_labels_tiff(path).data  # Sam3Error for non-integer data
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2:
        raise Sam3Error(
            f"{path.name} is not a 2-D label image (shape {labels.shape}); give one label image "
            "per plane."
        )
    return labels
