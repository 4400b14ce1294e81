"""Export one plane's result in several formats at once (used by the widget and the batch CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.io.atomic import check_writable, write_json
from napari_sam3.io.coco import coco_from_candidates, coco_from_labels
from napari_sam3.io.pairs import pair_paths, write_pair_files
from napari_sam3.io.png import write_labels_png
from napari_sam3.io.tables import candidates_table, table_from_labels, write_table_csv
from napari_sam3.io.tiff import write_labels_tiff

FORMATS = ("tiff", "png", "coco", "pairs")


def parse_formats(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"tiff,png"`` -> ``("tiff", "png")``; unknown names raise `Sam3Error`. TIFF is always kept."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower() for s in items if s.strip()]
    names = ["tiff" if n in ("tif",) else n for n in names]
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise Sam3Error(f"Unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}.")
    return tuple(dict.fromkeys(["tiff", *names]))


def output_paths(
    out_dir: str | os.PathLike, stem: str, formats: tuple[str, ...]
) -> dict[str, Path]:
    """Every file `export_plane` writes for ``stem`` (key -> path)."""
    out = Path(out_dir)
    paths = {"labels_tiff": out / f"{stem}_labels.tif", "objects_csv": out / f"{stem}_objects.csv"}
    if "png" in formats:
        paths["labels_png"] = out / f"{stem}_labels.png"
    if "coco" in formats:
        paths["coco_part"] = out / ".parts" / f"{stem}.coco.json"
    if "pairs" in formats:
        img, mask = pair_paths(out / "pairs", stem)
        paths["pair_image"], paths["pair_mask"] = img, mask
    return paths


def export_plane(
    out_dir: str | os.PathLike,
    stem: str,
    *,
    labels: np.ndarray | None = None,
    candidates: Candidates | None = None,
    table: pd.DataFrame | None = None,
    image: np.ndarray | None = None,
    rgb: bool | None = None,
    formats: tuple[str, ...] = ("tiff",),
    scale: tuple[float, float] | None = None,
    unit: str = "micron",
    file_name: str | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_labels.tif``, ``<stem>_objects.csv`` and the other requested formats.

    Give ``candidates`` (labels and table are derived; COCO keeps overlapping masks) or ``labels``
    (+ optional ``table`` with label/prompt/score). Every path is checked before anything is written,
    so a refusal (existing file, no ``overwrite``) leaves nothing half-done. Returns key -> path;
    a COCO part goes to ``.parts/<stem>.coco.json`` (merge the parts with `io.coco.merge_coco`).
    """
    if candidates is None and labels is None:
        raise Sam3Error("export_plane needs candidates or labels.")
    paths = output_paths(out_dir, stem, formats)
    for p in paths.values():
        check_writable(p, overwrite)
    if "pairs" in formats and image is None:
        raise Sam3Error("The pairs format needs the source image.")
    if candidates is not None:
        labels = candidates.to_label_image()
        table = candidates_table(candidates, label_image=labels, scale=scale)
    else:
        labels = np.asarray(labels)
        if table is None:
            table = table_from_labels(labels, prompt="object", scale=scale)
    tiff_scale = None if scale is None else tuple(scale)
    if tiff_scale is not None and labels.ndim != len(tiff_scale):
        tiff_scale = None
    write_labels_tiff(
        paths["labels_tiff"],
        labels,
        scale=tiff_scale,
        unit=unit,
        overwrite=overwrite,
        metadata=metadata,
    )
    write_table_csv(paths["objects_csv"], table, overwrite=overwrite)
    if "labels_png" in paths:
        write_labels_png(paths["labels_png"], labels, overwrite=overwrite)
    if "coco_part" in paths:
        # with training pairs, COCO points at the 2-D pair image (a stack's plane has no file)
        name = f"pairs/images/{stem}.tif" if "pair_image" in paths else (file_name or f"{stem}.tif")
        extra = {
            "stem": stem,
            **{k: v for k, v in (metadata or {}).items() if k in ("source", "slice")},
        }
        coco = (
            coco_from_candidates(candidates, file_name=name, image_extra=extra)
            if candidates is not None
            else coco_from_labels(labels, table, file_name=name, image_extra=extra)
        )
        write_json(paths["coco_part"], coco, overwrite=overwrite)
    if "pair_image" in paths:
        write_pair_files(Path(out_dir) / "pairs", stem, image, labels, overwrite=overwrite, rgb=rgb)
    return paths
