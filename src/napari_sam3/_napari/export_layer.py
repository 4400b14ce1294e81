"""Export a Labels layer as the widget's Export button does: labels TIFF + objects CSV (+ COCO, pairs).

Qt-free; the files come from `io.export.export_plane`. The table is measured from the pixels the
layer holds NOW (hand edits and commits included) by `io.tables.layer_table`, the same builder as the
napari writer, so the CSV always describes the TIFF next to it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sam3._napari.identity import find_layer
from napari_sam3._napari.layers import level0, scale_or_none
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.review import drop_rejected, rejected_labels
from napari_sam3.io.atomic import check_writable
from napari_sam3.io.coco import merge_coco, write_coco
from napari_sam3.io.export import FORMATS, export_plane, output_paths
from napari_sam3.io.tables import layer_table

PLANE_ONLY = ("coco", "pairs", "png")  # formats that describe one 2-D plane


def file_stem(name: str) -> str:
    """A file-name stem from a layer name (``nucleus [2] · cells`` -> ``nucleus_2_cells``)."""
    stem = re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip("._")
    return stem or "labels"


def _plane(data: np.ndarray) -> np.ndarray:
    """The data without its leading size-1 axes (a one-plane result layer is (1, .., 1, H, W))."""
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    return data


def _table(layer, labels: np.ndarray, scale) -> pd.DataFrame:
    features = pd.DataFrame(layer.features) if layer.features is not None else pd.DataFrame()
    if "label" in features.columns:
        features = features[~features["label"].isin(rejected_labels(features))]
    table = layer_table(labels, features, scale)
    if table is None:
        raise Sam3Error(
            f"'{layer.name}' is a stack without an objects table; export a 2-D Labels layer "
            "or save the layer with File > Save Selected Layers."
        )
    return table


def export_paths(layer, out_dir, formats: tuple[str, ...]) -> dict[str, Path]:
    """The files `export_layer` writes (to ask before replacing any)."""
    stem = file_stem(layer.name)
    paths = output_paths(out_dir, stem, _formats(layer, formats))
    if paths.pop("coco_part", None) is not None:  # one image: the finished file, not a batch part
        paths["coco"] = Path(out_dir) / f"{stem}_coco.json"
    return paths


def _formats(layer, formats) -> tuple[str, ...]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise Sam3Error(f"Unknown export format(s): {', '.join(bad)}.")
    if _plane(np.asarray(level0(layer.data))).ndim != 2:
        formats = [f for f in formats if f not in PLANE_ONLY]
    return tuple(dict.fromkeys(["tiff", *formats]))


def export_layer(
    viewer,
    layer,
    out_dir: str | os.PathLike,
    formats: tuple[str, ...] = ("tiff",),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``layer`` to ``out_dir``; returns key -> path (see `io.export.export_plane`).

    COCO, PNG and training pairs are written for one-plane layers only (stacks: TIFF + CSV). Pairs
    need the image the result was made from (found by the uid in the layer's metadata).
    """
    formats = _formats(layer, formats)
    labels = _plane(np.asarray(level0(layer.data)))
    features = getattr(layer, "features", None)
    if features is not None and "label" in features.columns:  # rejected in review: never exported
        labels, _ = drop_rejected(labels, features)
    scale = scale_or_none(layer.scale)
    meta = layer.metadata.get("sam3", {}) if isinstance(layer.metadata, dict) else {}
    image = None
    if "pairs" in formats:
        source = find_layer(viewer, meta.get("image_uid"))
        if source is None:
            raise Sam3Error(
                f"Training pairs need the image '{meta.get('image', '?')}' that '{layer.name}' was "
                "made from; it is no longer in the viewer. Export without pairs."
            )
        src = np.asarray(level0(source.data))
        index = tuple(meta.get("slice") or ())
        image = src[index] if index else src
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    final = export_paths(layer, out_dir, formats)
    if "coco" in final:
        check_writable(final["coco"], overwrite)  # before anything is written
    paths = export_plane(
        out_dir,
        file_stem(layer.name),
        labels=labels,
        table=_table(layer, labels, scale),
        image=image,
        rgb=bool(getattr(find_layer(viewer, meta.get("image_uid")), "rgb", False)),
        formats=formats,
        scale=scale if labels.ndim == 2 else None,
        metadata={"source": meta.get("image"), "slice": list(meta.get("slice") or [])},
        overwrite=overwrite,
    )
    part = paths.pop("coco_part", None)
    if part is not None:
        write_coco(final["coco"], merge_coco([json.loads(part.read_text())]), overwrite=overwrite)
        part.unlink()
        try:
            part.parent.rmdir()
        except OSError:  # other parts there (a batch run's folder): leave them
            pass
        paths["coco"] = final["coco"]
    return paths
