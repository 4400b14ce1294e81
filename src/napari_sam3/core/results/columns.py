"""Names and order of the per-object table columns, defined once for every table we write.

- `CANDIDATE_COLUMNS`: `Candidates.table` (the napari ``features`` of a segmentation result).
- `MEASURE_COLUMNS`: `core.measure.measure_labels` (counting).
- `EXPORT_COLUMNS` = `OBJECT_COLUMNS` + `EXTRA_COLUMNS`: every exported objects CSV, all columns always
  (`core.results.objects.objects_table`; physical columns empty without a pixel size).

Coordinates are in plane pixels (bbox end exclusive); the ``*_physical`` columns use the pixel size.
"""

from __future__ import annotations

# The ``prompt`` of an object a person made (a committed click, a brush stroke): it has no score.
HAND_PROMPT = "(by hand)"

CENTROID_COLUMNS = ("centroid_y", "centroid_x")
BBOX_COLUMNS = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
PHYSICAL_COLUMNS = ("area_physical", "centroid_y_physical", "centroid_x_physical")

CANDIDATE_COLUMNS = (
    "label",
    "prompt",
    "kind",
    "score",
    "area",
    "visible_area",
    *CENTROID_COLUMNS,
    *BBOX_COLUMNS,
)
MEASURE_COLUMNS = (
    "label",
    "area",
    "equivalent_diameter",
    *CENTROID_COLUMNS,
    *BBOX_COLUMNS,
    "mean_intensity",
    "max_intensity",
    "eccentricity",
    "score",
    "prompt",
)
OBJECT_COLUMNS = ("label", "prompt", "score", "area", *CENTROID_COLUMNS, *BBOX_COLUMNS)
# A count's CSV (widget and CLI alike): the export columns, then the counter's own measurements.
COUNT_EXTRA_COLUMNS = ("equivalent_diameter", "mean_intensity", "max_intensity", "eccentricity")
EXTRA_COLUMNS = ("visible_area", *PHYSICAL_COLUMNS)
# Every objects CSV (widget features, CLI, napari writer): `core.results.objects.objects_table`.
EXPORT_COLUMNS = (*OBJECT_COLUMNS, *EXTRA_COLUMNS)
# Columns that are floats (NaN where unknown); the others are int64 except ``prompt``/``kind`` (text).
FLOAT_COLUMNS = frozenset(
    {
        "score",
        "iou_score",
        "mean_intensity",
        "max_intensity",
        "equivalent_diameter",
        "eccentricity",
        *CENTROID_COLUMNS,
        *PHYSICAL_COLUMNS,
        "equivalent_diameter_physical",
    }
)
