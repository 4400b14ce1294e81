"""Readers and exporters (TIFF, PNG, COCO, training pairs, tables); every write is atomic.

Nothing here imports Qt or napari.
"""

from .atomic import atomic_path, file_digest, write_json
from .coco import (
    candidates_from_coco,
    coco_from_candidates,
    coco_from_labels,
    load_coco,
    merge_coco,
    write_coco,
)
from .export import FORMATS, export_plane, parse_formats
from .manifest import package_versions, provenance
from .pairs import export_training_pair, read_pair, read_pairs_manifest
from .png import read_labels_png, write_labels_png
from .readers import Plane, expand_inputs, iter_planes, read_image
from .tables import (
    OBJECT_COLUMNS,
    objects_table,
    read_table_csv,
    table_from_labels,
    write_table_csv,
)
from .tiff import TiffLabels, read_labels_tiff, write_image_tiff, write_labels_tiff

__all__ = [
    "FORMATS",
    "OBJECT_COLUMNS",
    "Plane",
    "TiffLabels",
    "atomic_path",
    "candidates_from_coco",
    "coco_from_candidates",
    "coco_from_labels",
    "expand_inputs",
    "export_plane",
    "export_training_pair",
    "file_digest",
    "iter_planes",
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
