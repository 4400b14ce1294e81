"""Training pairs: ``images/<stem>.tif`` + ``masks/<stem>.tif`` (same stem) + ``manifest.json``.

The image is the raw plane (dtype and colour kept), the mask the label image (uint16/uint32).
``manifest.json`` has one entry per pair (source file, slice, model, prompts, thresholds, versions,
date); writing a pair with an existing stem replaces its entry, so re-exports never duplicate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import check_writable, write_json
from napari_sam3.io.tiff import read_labels_tiff, write_image_tiff, write_labels_tiff

MANIFEST = "manifest.json"


def pair_paths(out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    return out_dir / "images" / f"{stem}.tif", out_dir / "masks" / f"{stem}.tif"


def write_pair_files(
    out_dir: str | os.PathLike,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    overwrite: bool = False,
    rgb: bool | None = None,
) -> tuple[Path, Path]:
    """Write the image and mask TIFFs of one pair (no manifest update); both checked first."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    spatial = (
        image.shape[:2] if (image.ndim == 3 and (rgb or image.shape[-1] in (3, 4))) else image.shape
    )
    if tuple(spatial) != tuple(labels.shape):
        raise Sam3Error(f"image {image.shape} and mask {labels.shape} differ in size.")
    img_path, mask_path = pair_paths(out_dir, stem)
    check_writable(img_path, overwrite)
    check_writable(mask_path, overwrite)
    write_image_tiff(img_path, image, overwrite=overwrite, rgb=rgb)
    write_labels_tiff(mask_path, labels, overwrite=overwrite)
    return img_path, mask_path


def export_training_pair(
    out_dir: str | os.PathLike,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    info: dict | None = None,
    *,
    overwrite: bool = False,
    rgb: bool | None = None,
) -> tuple[Path, Path]:
    """Write one pair and add (or replace) its entry in ``out_dir/manifest.json``.

    ``info`` is a `napari_sam3.io.manifest.provenance` dict (source, slice, model, prompts...).
    """
    img_path, mask_path = write_pair_files(
        out_dir, stem, image, labels, overwrite=overwrite, rgb=rgb
    )
    entry = pair_entry(out_dir, stem, info)
    update_pairs_manifest(out_dir, [entry])
    return img_path, mask_path


def pair_entry(out_dir: str | os.PathLike, stem: str, info: dict | None = None) -> dict:
    img_path, mask_path = pair_paths(out_dir, stem)
    return {
        "stem": stem,
        "image": img_path.relative_to(out_dir).as_posix(),
        "mask": mask_path.relative_to(out_dir).as_posix(),
        **(info or {}),
    }


def update_pairs_manifest(
    out_dir: str | os.PathLike, entries: list[dict], *, replace_all: bool = False
) -> Path:
    """Merge ``entries`` into ``manifest.json`` by stem (sorted by stem), written atomically."""
    path = Path(out_dir) / MANIFEST
    current: dict[str, dict] = {}
    if path.exists() and not replace_all:
        current = {e["stem"]: e for e in read_pairs_manifest(out_dir)["pairs"]}
    for e in entries:
        current[e["stem"]] = e
    doc = {
        "format": "napari-sam3 training pairs",
        "version": 1,
        "pairs": [current[k] for k in sorted(current)],
    }
    return write_json(path, doc, overwrite=True)


def read_pairs_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Sam3Error(f"{path}: cannot read the pairs manifest ({exc}).") from exc
    if not isinstance(doc, dict) or "pairs" not in doc:
        raise Sam3Error(f"{path} is not a napari-sam3 pairs manifest.")
    return doc


def read_pair(out_dir: str | os.PathLike, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of one stored pair."""
    import tifffile

    img_path, mask_path = pair_paths(out_dir, stem)
    return tifffile.imread(img_path), read_labels_tiff(mask_path).data
