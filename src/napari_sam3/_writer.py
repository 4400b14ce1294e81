"""napari writer: a Labels layer -> compressed TIFF + ``<stem>_objects.csv`` from its features.

napari's save dialog has already asked before replacing the chosen file, so the TIFF is replaced when
it exists. The CSV sidecar was not part of that question: an existing ``<stem>_objects.csv`` is
never replaced; the table goes to the first free ``<stem>_objects-N.csv`` beside it instead (the
returned paths say where). The table is `io.tables.layer_table`, the one Export writes too. Objects whose review ``status`` is
"rejected" are left out of both (`core.results.review`). Writes are atomic. No Qt import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_sam3.core.results.review import drop_rejected
from napari_sam3.io.tables import layer_table, write_table_csv
from napari_sam3.io.tiff import write_labels_tiff


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Labels: returns the paths written."""
    if isinstance(data, (list, tuple)):  # multiscale: the full-resolution level
        data = data[0]
    labels = np.asarray(data)
    out = Path(path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        out = out.with_suffix(".tif")
    scale = attributes.get("scale")
    if scale is not None:
        scale = tuple(float(s) for s in scale)
        if len(scale) != labels.ndim or all(s == 1.0 for s in scale):
            scale = None
    metadata = {"name": attributes.get("name")} if attributes.get("name") else None
    features = attributes.get("features")
    table = pd.DataFrame(features) if features is not None else pd.DataFrame()
    if "label" in table.columns:  # objects rejected in review never leave the program
        labels, table = drop_rejected(labels, table)
    write_labels_tiff(out, labels, scale=scale, overwrite=True, metadata=metadata)
    written = [str(out)]
    table = layer_table(labels, table, scale=scale[-2:] if scale else None)
    if table is not None:
        csv = free_sidecar(out.with_name(out.stem + "_objects.csv"))
        write_table_csv(csv, table, overwrite=False)
        written.append(str(csv))
    return written


def free_sidecar(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``<stem>-N<suffix>`` beside it."""
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
