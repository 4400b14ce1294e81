"""Clicks and boxes on a stack's prompt layers -> objects to propagate -> one result layer, Qt-free.

The prompt layers (`prompt_layers`: a Points layer of clicks, a Shapes layer of boxes, each with
a ``sign`` feature) share the image's nD geometry, so every click carries its slice. An
``object`` feature says which object a click or box belongs to (missing: object 1); "New object"
raises the layer's ``feature_defaults["object"]`` so the next clicks start another one.

- `object_prompts`: all clicks / boxes along the tracked axis (the last leading one; the other
  leading axes at the slice shown) as `core.tracking.click_tracking.ObjectPrompt` s, one per
  (object, slice); a slice's last box is the object's box there.
- `new_object`: the next object id for new clicks and boxes.
- `propagation_features`: the result layer's ``features`` (one row per object, with a
  ``score`` and a review ``status``), so tracked objects join the review table.

The run itself is `SegmentSession.run_propagation`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_sam3._napari.layers import PlaneRef
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.review import with_status

OBJECT_FEATURE = "object"


def objects_of(layer) -> list[int]:
    """The object id of each point / shape of ``layer`` (1 where the feature is missing)."""
    if layer is None:
        return []
    n = len(layer.data)
    if OBJECT_FEATURE not in layer.features:
        return [1] * n
    values = pd.to_numeric(layer.features[OBJECT_FEATURE], errors="coerce").fillna(1)
    return [max(1, int(v)) for v in values]


def new_object(*layers) -> int:
    """Start a new object on these prompt layers: its id becomes their default for new prompts."""
    used = [o for layer in layers if layer is not None for o in objects_of(layer)]
    current = [
        int(layer.feature_defaults[OBJECT_FEATURE].iloc[0])
        for layer in layers
        if layer is not None and OBJECT_FEATURE in layer.feature_defaults
    ]
    nxt = max(used + current + [0]) + 1
    for layer in layers:
        if layer is None:
            continue
        if OBJECT_FEATURE not in layer.features:
            features = layer.features.copy()
            features[OBJECT_FEATURE] = objects_of(layer)
            layer.features = features
        defaults = layer.feature_defaults.copy()
        defaults[OBJECT_FEATURE] = nxt
        layer.feature_defaults = defaults
    return nxt


def _along(coords: np.ndarray, ref: PlaneRef) -> tuple[np.ndarray, np.ndarray]:
    """(slice along the tracked axis, on-this-stack mask) of nD prompt coordinates."""
    lead = np.round(coords[:, : len(ref.index)]).astype(int)
    others = lead[:, :-1]
    on_stack = np.all(others == np.asarray(ref.index[:-1], dtype=int), axis=1)
    return lead[:, -1], on_stack


def object_prompts(clicks_layer, boxes_layer, ref: PlaneRef, n_slices: int) -> list:
    """The `ObjectPrompt` s of all clicks and boxes of the stack shown by ``ref``."""
    from napari_sam3.core.tracking.click_tracking import ObjectPrompt

    if len(ref.index) < 1:
        raise Sam3Error("Propagating needs a z or t stack; click on a single plane instead.")
    per: dict[tuple[int, int], dict] = {}
    if clicks_layer is not None and len(clicks_layer.data):
        coords = np.asarray(clicks_layer.data, float).reshape(-1, ref.ndim)
        slices, keep = _along(coords, ref)
        signs = list(clicks_layer.features["sign"]) if "sign" in clicks_layer.features else []
        objects = objects_of(clicks_layer)
        for k in np.flatnonzero(keep & (slices >= 0) & (slices < n_slices)):
            entry = per.setdefault((objects[k], int(slices[k])), {"xy": [], "labels": []})
            entry["xy"].append([coords[k, -1], coords[k, -2]])
            entry["labels"].append(0 if k < len(signs) and str(signs[k]) == "negative" else 1)
    if boxes_layer is not None and len(boxes_layer.data):
        objects = objects_of(boxes_layer)
        for k, verts in enumerate(boxes_layer.data):
            verts = np.asarray(verts, float).reshape(-1, ref.ndim)
            slices, keep = _along(verts, ref)
            if not keep.all() or len(set(slices.tolist())) != 1:
                continue
            s = int(slices[0])
            if not 0 <= s < n_slices:
                continue
            y0, x0 = verts[:, -2].min(), verts[:, -1].min()
            y1, x1 = verts[:, -2].max(), verts[:, -1].max()
            per.setdefault((objects[k], s), {"xy": [], "labels": []})["box"] = [x0, y0, x1, y1]
    if not per:
        raise Sam3Error(
            "Click on (or draw a box around) the objects to propagate first, on any slice."
        )
    return [
        ObjectPrompt(
            obj_id=obj,
            frame=s,
            points_xy=entry["xy"] or None,
            point_labels=entry["labels"] or None,
            box_xyxy=entry.get("box"),
        )
        for (obj, s), entry in sorted(per.items())
    ]


def propagation_features(table: pd.DataFrame, objects: list[int]) -> pd.DataFrame:
    """One row per prompted object (napari ``index`` = label): slices seen, best score, status."""
    rows = []
    for obj in objects:
        part = table[table["label"] == obj]
        rows.append(
            {
                "index": int(obj),
                "label": int(obj),
                "prompt": f"object {obj}",
                "score": float(part["score"].max()) if len(part) else 0.0,
                "frames": int(part["frame"].nunique()),
                "first_frame": int(part["frame"].min()) if len(part) else -1,
                "last_frame": int(part["frame"].max()) if len(part) else -1,
                "mean_area": float(part["area"].mean()) if len(part) else 0.0,
            }
        )
    return with_status(pd.DataFrame(rows))


__all__ = ["OBJECT_FEATURE", "new_object", "object_prompts", "objects_of", "propagation_features"]
