"""Label images as 16-bit PNG (2-D only), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import atomic_path


def write_labels_png(
    path: str | os.PathLike, labels: np.ndarray, *, overwrite: bool = False
) -> Path:
    """Write a 2-D label image as a 16-bit grayscale PNG.

    PNG holds at most 16 bits per pixel: more than 65,535 objects raise `Sam3Error` (use TIFF).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise Sam3Error(f"PNG export needs a 2-D label image, got shape {labels.shape}; use TIFF.")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise Sam3Error(
            "Label ids do not fit in a 16-bit PNG (more than 65,535 objects); use TIFF."
        )
    import imageio.v3 as iio

    with atomic_path(path, overwrite) as tmp:
        iio.imwrite(tmp, labels.astype(np.uint16), extension=".png")
    return Path(path)


def read_labels_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG back as uint16."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path)).astype(np.uint16)
