"""Readers and exporters (TIFF, PNG, COCO, training pairs, tables); every write is atomic.

Nothing here imports Qt or napari.
"""

from napari_sam3.io.atomic import atomic_path, file_digest, write_json
from napari_sam3.io.coco import (
    candidates_from_coco,
    coco_from_candidates,
    coco_from_labels,
    load_coco,
    merge_coco,
    write_coco,
)
from napari_sam3.io.export import FORMATS, export_plane, parse_formats
from napari_sam3.io.manifest import package_versions, provenance
from napari_sam3.io.pairs import export_training_pair, read_pair, read_pairs_manifest
from napari_sam3.io.png import read_labels_png, write_labels_png
from napari_sam3.io.readers import Plane, expand_inputs, iter_planes, read_image
from napari_sam3.io.tables import (
    OBJECT_COLUMNS,
    candidates_table,
    layer_table,
    objects_table,
    read_table_csv,
    table_from_labels,
    write_table_csv,
)
from napari_sam3.io.tiff import TiffLabels, read_labels_tiff, write_image_tiff, write_labels_tiff

__all__ = [
    "FORMATS",
    "OBJECT_COLUMNS",
    "Plane",
    "TiffLabels",
    "atomic_path",
    "candidates_table",
    "candidates_from_coco",
    "coco_from_candidates",
    "coco_from_labels",
    "expand_inputs",
    "export_plane",
    "export_training_pair",
    "file_digest",
    "iter_planes",
    "layer_table",
    "load_coco",
    "merge_coco",
    "objects_table",
    "package_versions",
    "parse_formats",
    "provenance",
    "read_image",
    "read_labels_png",
    "read_labels_tiff",
    "read_pair",
    "read_pairs_manifest",
    "read_table_csv",
    "table_from_labels",
    "write_coco",
    "write_image_tiff",
    "write_json",
    "write_labels_png",
    "write_labels_tiff",
    "write_table_csv",
]
