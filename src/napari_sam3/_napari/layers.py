"""Candidates -> napari layer data, and the plane a run works on. Pure numpy; no Qt.

Placement of results in nD (documented choice)
---------------------------------------------
A run on slice ``k`` of a stack writes a Labels layer whose data has the image's number of
dimensions but size 1 on every non-displayed axis: ``(1, ..., 1, H, W)``. Its ``translate`` is shifted
by the image's own linear transform applied to ``k``, so the one plane lies exactly on slice ``k`` (scale,
rotate, shear and affine are copied unchanged). napari shows it on slice ``k`` only, and it costs
``H * W`` label pixels instead of the whole stack. Commits from clicks go into a full-size target layer
(the user's annotation layer), because that one collects objects from many slices.

Mask refinement and the threshold / min-area filter live in `core.results.refine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_sam3._napari.identity import layer_uid
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.columns import HAND_PROMPT, PHYSICAL_COLUMNS
from napari_sam3.core.results.refine import filter_candidates


# --------------------------------------------------------------------------- the plane of a run
@dataclass(frozen=True)
class PlaneRef:
    """Which 2-D plane of which image a run works on, captured when the run starts.

    ``index`` holds the integer position on every non-displayed (leading) axis of the layer; the two
    displayed axes are the layer's last two (plus the colour axis for RGB layers).
    """

    layer_name: str
    index: tuple[int, ...]
    shape: tuple[int, int]
    rgb: bool
    ndim: int
    geometry: dict = field(default_factory=dict, compare=False)
    image_uid: str = field(default="", compare=False)  # `identity.layer_uid` of the image

    def label_shape(self) -> tuple[int, ...]:
        """Shape of a result layer's data: singleton leading axes, then the plane."""
        return (1,) * len(self.index) + tuple(self.shape)

    def slice_text(self) -> str:
        return "" if not self.index else " [" + ",".join(str(i) for i in self.index) + "]"


def layer_geometry(layer) -> dict:
    """The image layer's placement (scale, translate, rotate, shear, affine) as plain arrays."""
    return {
        "scale": np.array(layer.scale, dtype=float),
        "translate": np.array(layer.translate, dtype=float),
        "rotate": np.array(layer.rotate, dtype=float),
        "shear": np.array(layer.shear, dtype=float),
        "affine": np.array(layer.affine.affine_matrix, dtype=float),
    }


def plane_ref(layer, dims_point, dims_displayed, ndisplay: int = 2) -> PlaneRef:
    """The plane of ``layer`` shown at the viewer's current ``dims_point``.

    Raises `Sam3Error` when the view is 3-D or the displayed axes are not the layer's last two.
    """
    ndim = int(layer.ndim)
    if ndisplay != 2:
        raise Sam3Error("SAM3 works on 2-D planes: switch the viewer to 2-D view (Ctrl+Y).")
    if ndim < 2:
        raise Sam3Error(f"Layer '{layer.name}' has fewer than 2 dimensions.")
    world_ndim = len(dims_point)
    offset = world_ndim - ndim
    displayed = tuple(int(d) - offset for d in dims_displayed)
    if displayed != (ndim - 2, ndim - 1):
        raise Sam3Error(
            "SAM3 segments the plane of the layer's last two axes; reset the axis order "
            "(the dims 'transpose' / 'roll' buttons) so they are the displayed ones."
        )
    shape = tuple(int(s) for s in level0(layer.data).shape)
    if layer.rgb:
        shape = shape[:-1]
    data_point = np.asarray(layer.world_to_data(dims_point), dtype=float)
    index = []
    for axis in range(ndim - 2):
        i = int(np.round(data_point[axis]))
        index.append(int(np.clip(i, 0, shape[axis] - 1)))
    return PlaneRef(
        layer_name=str(layer.name),
        index=tuple(index),
        shape=(shape[-2], shape[-1]),
        rgb=bool(layer.rgb),
        ndim=ndim,
        geometry=layer_geometry(layer),
        image_uid=layer_uid(layer),
    )


def read_plane(layer_data, ref: PlaneRef) -> np.ndarray:
    """The plane ``ref`` points at, as a numpy array (computes dask / zarr slices)."""
    data = level0(layer_data)
    return np.asarray(data[ref.index]) if ref.index else np.asarray(data)


def level0(data):
    """The full-resolution array of a layer's data (multiscale layers hold a list of levels)."""
    if isinstance(data, (list, tuple)):
        return data[0]
    return data


def placed_geometry(ref: PlaneRef) -> dict:
    """Layer kwargs that put a ``ref.label_shape()`` array exactly on the image's plane."""
    g = ref.geometry
    if not g:
        return {}
    translate = np.array(g["translate"], dtype=float)
    if ref.index:
        from napari.utils.transforms import CompositeAffine

        linear = CompositeAffine(
            scale=g["scale"],
            translate=np.zeros(ref.ndim),
            rotate=g["rotate"],
            shear=g["shear"],
            ndim=ref.ndim,
        ).linear_matrix
        shift = np.zeros(ref.ndim)
        shift[: len(ref.index)] = ref.index
        translate = translate + linear @ shift
    return {
        "scale": g["scale"],
        "translate": translate,
        "rotate": g["rotate"],
        "shear": g["shear"],
        "affine": g["affine"],
    }


def full_geometry(ref: PlaneRef) -> dict:
    """Layer kwargs matching the image layer itself (for full-size layers: prompts, annotations)."""
    return {k: v for k, v in ref.geometry.items()}


# --------------------------------------------------------------------------- result layers
def result_name(ref: PlaneRef, cands: Candidates, prompt_text: str | None = None) -> str:
    prompt = prompt_text or ", ".join(cands.concepts) or cands.kind
    # what was asked first: the layer list truncates long names at the end
    return f"{prompt}{ref.slice_text()} · {ref.layer_name}"


def features_table(cands: Candidates, label_image: np.ndarray, ref: PlaneRef) -> pd.DataFrame:
    """One row per object (hidden ones too), with napari's ``index`` column = label id.

    `Candidates.table` (plane pixels, ``iou_score`` for clicks) with the physical columns from the
    image's scale on the displayed axes, plus ``index`` first and ``slice`` for nD images.
    """
    plane = np.asarray(label_image).reshape(cands.shape)
    table = cands.table(first_id=1, label_image=plane, scale=pixel_size(ref))
    for col in PHYSICAL_COLUMNS:  # as in every CSV: there, and empty without a pixel size
        if col not in table.columns:
            table[col] = np.nan
    table.insert(0, "index", table["label"].to_numpy())
    if ref.index:
        table["slice"] = [",".join(map(str, ref.index))] * len(table)
    return table


def pixel_size(ref: PlaneRef) -> tuple[float, float] | None:
    """The (sy, sx) pixel size of ``ref``'s plane, or None where the image has no scale (all 1):
    the one rule for physical columns, features and Export alike (empty, never pixel values)."""
    scale = ref.geometry.get("scale") if ref.geometry else None
    return scale_or_none(scale)


def scale_or_none(scale) -> tuple[float, float] | None:
    """A layer's scale on its last two axes, or None when it is 1, 1 (no pixel size given)."""
    if scale is None:
        return None
    sy, sx = float(scale[-2]), float(scale[-1])
    return None if (sy, sx) == (1.0, 1.0) else (sy, sx)


@dataclass(frozen=True)
class FilterSettings:
    """The Segment result controls: score floor, min area (px), mask refinement, hidden layer
    (named as the CLI flags and `core.requests.SegmentRequest`: ``min_score``, ``refine``)."""

    min_score: float | None = None
    min_area: int = 0
    refine: str = "Low"
    show_hidden: bool = False


@dataclass
class PreparedResult:
    """Everything a (re-)filtered text result needs on the main thread, computed in the worker.

    ``cands``: the filtered candidates (by score, best first); ``data`` / ``kwargs``: the label array
    and ``add_labels`` kwargs; ``hidden``: the hidden-objects image or None; ``layer`` /
    ``hidden_layer``: the napari layers built from them in the worker (`layer_builder`), if any.
    """

    cands: Candidates
    data: np.ndarray
    kwargs: dict
    hidden: np.ndarray | None
    settings: FilterSettings
    layer: object = None
    hidden_layer: object = None


def prepare_result(
    raw: Candidates,
    ref: PlaneRef,
    prompt_text: str,
    min_score: float | None,
    min_area: int,
    refine: str,
    with_hidden: bool = False,
) -> PreparedResult:
    """Filter ``raw`` and lay it out as a result layer's data, off the main thread."""
    cands = filter_candidates(raw, min_score, min_area, refine)
    if len(cands):
        cands = cands.sorted_by_score()
    data, kwargs = labels_layer_data(cands, ref, prompt_text)
    hidden = None
    if with_hidden:
        hidden = hidden_label_image(cands, data).reshape(ref.label_shape())
    settings = FilterSettings(min_score, min_area, refine, with_hidden)
    return PreparedResult(cands, data, kwargs, hidden, settings)


def prepare_filtered(
    raw: Candidates, ref: PlaneRef, prompt_text: str, settings: FilterSettings
) -> PreparedResult:
    """`prepare_result` with the controls as one `FilterSettings`."""
    s = settings
    return prepare_result(raw, ref, prompt_text, s.min_score, s.min_area, s.refine, s.show_hidden)


def labels_layer_data(
    cands: Candidates, ref: PlaneRef, prompt_text: str | None = None
) -> tuple[np.ndarray, dict]:
    """``(data, kwargs)`` for ``viewer.add_labels(data, **kwargs)`` showing ``cands`` on ``ref``.

    Overlaps follow `Candidates.to_label_image` (higher score wins); ids are ``1..N`` in candidate
    order, and ``features`` has one row per candidate.
    """
    plane = cands.to_label_image(first_id=1)
    data = plane.reshape(ref.label_shape())
    kwargs = {
        "name": result_name(ref, cands, prompt_text),
        "features": features_table(cands, plane, ref),
        "metadata": {
            "sam3": {
                "kind": cands.kind,
                "slice": ref.index,
                "image": ref.layer_name,
                "image_uid": ref.image_uid,
            }
        },
        **placed_geometry(ref),
    }
    return data, kwargs


def hidden_label_image(cands: Candidates, label_image: np.ndarray) -> np.ndarray:
    """A label image of the objects that are completely covered by others, keeping their ids."""
    plane = label_image.reshape(cands.shape)
    n = len(cands)
    visible = np.bincount(plane.ravel(), minlength=n + 1)[1 : n + 1]
    hidden = np.flatnonzero(visible == 0)
    out = np.zeros(cands.shape, dtype=plane.dtype)
    if hidden.size == 0:
        return out
    sub = cands.subset(hidden).to_label_image(first_id=1)
    ids = np.concatenate([[0], hidden + 1]).astype(out.dtype)
    return ids[sub]


# --------------------------------------------------------------------------- prompts
def points_in_plane(coords: np.ndarray, signs, ref: PlaneRef) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on the plane of ``ref`` as model ``x, y`` with labels 1 (positive) / 0 (negative).

    ``coords`` are data coordinates of a prompt layer that shares the image's geometry: ``(N, ndim)``
    rows (napari's row/col order). Points on other slices are ignored.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, ref.ndim)
    signs = np.asarray(list(signs), dtype=object).reshape(-1)
    keep = _on_plane(coords, ref)
    yx = coords[keep, -2:]
    xy = yx[:, ::-1].astype(np.float32)
    labels = np.array([0 if str(s) == "negative" else 1 for s in signs[keep]], np.int64)
    return xy, labels


def boxes_in_plane(shapes_data, signs, ref: PlaneRef) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles on the plane of ``ref`` as model ``x0, y0, x1, y1`` with labels 1 / 0."""
    boxes, labels = [], []
    for verts, sign in zip(shapes_data, signs, strict=False):
        verts = np.asarray(verts, dtype=float).reshape(-1, ref.ndim)
        if not _on_plane(verts, ref).all():
            continue
        y0, x0 = verts[:, -2].min(), verts[:, -1].min()
        y1, x1 = verts[:, -2].max(), verts[:, -1].max()
        x0, x1 = np.clip([x0, x1], 0, ref.shape[1])
        y0, y1 = np.clip([y0, y1], 0, ref.shape[0])
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        boxes.append([x0, y0, x1, y1])
        labels.append(0 if str(sign) == "negative" else 1)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _on_plane(coords: np.ndarray, ref: PlaneRef) -> np.ndarray:
    if not ref.index:
        return np.ones(len(coords), bool)
    lead = np.round(coords[:, : len(ref.index)]).astype(int)
    return np.all(lead == np.asarray(ref.index), axis=1)


# --------------------------------------------------------------------------- commit
def commit_indices(target_shape, mask: np.ndarray, ref: PlaneRef, target_plane: np.ndarray):
    """Indices (numpy fancy-index tuple) of ``mask`` pixels that are 0 in the target plane.

    ``target_shape`` is the target layer's full shape: either the plane itself ``(H, W)`` or the image's
    full shape, in which case the leading ``ref.index`` is prepended.
    """
    target_shape = tuple(target_shape)
    free = np.asarray(mask, bool) & (np.asarray(target_plane) == 0)
    rr, cc = np.nonzero(free)
    if len(target_shape) == 2:
        return (rr, cc)
    if len(target_shape) != len(ref.index) + 2:
        raise Sam3Error(
            f"The target Labels layer has shape {target_shape}; it must match the image "
            f"({len(ref.index) + 2} axes) or be 2-D."
        )
    lead = tuple(np.full(rr.shape, i, dtype=rr.dtype) for i in ref.index)
    return (*lead, rr, cc)


def _target_ref(labels_layer, ref: PlaneRef) -> PlaneRef:
    """``ref`` with the index into the target: its own slice, or 0 for a one-plane result layer."""
    from dataclasses import replace

    lead = tuple(labels_layer.data.shape[:-2])
    if not lead or len(lead) != len(ref.index):
        return ref
    if all(i < n for i, n in zip(ref.index, lead, strict=True)) and not all(n == 1 for n in lead):
        return ref
    meta = labels_layer.metadata.get("sam3", {}) if isinstance(labels_layer.metadata, dict) else {}
    if all(n == 1 for n in lead) and tuple(meta.get("slice", ref.index)) == tuple(ref.index):
        return replace(ref, index=(0,) * len(lead))
    raise Sam3Error(
        f"The target Labels layer '{labels_layer.name}' belongs to another slice; choose the "
        "annotations layer (image-sized) or the result layer of this slice."
    )


def target_plane(target_data, ref: PlaneRef) -> np.ndarray:
    data = level0(target_data)
    if data.ndim == 2:
        return np.asarray(data)
    return np.asarray(data[ref.index])


def free_id(labels_layer) -> int:
    """An id no object of ``labels_layer`` has: above its pixels AND its features rows (an object
    hidden by overlaps has a row but no pixel; its id must not be reused)."""
    top = int(np.max(labels_layer.data)) if labels_layer.data.size else 0
    features = getattr(labels_layer, "features", None)
    for col in ("label", "index"):
        if features is not None and col in features.columns and len(features):
            ids = pd.to_numeric(features[col], errors="coerce")
            if ids.notna().any():
                top = max(top, int(ids.max()))
    return top + 1


def add_hand_row(labels_layer, label: int, area: int) -> None:
    """Give a hand-made object its own features row: empty score, prompt `HAND_PROMPT`."""
    features = getattr(labels_layer, "features", None)
    if features is None or not len(features.columns):
        return  # a plain Labels layer: nothing to keep in step
    row = {c: np.nan for c in features.columns}
    for col in ("label", "index"):
        if col in row:
            row[col] = label
    if "prompt" in row:
        row["prompt"] = HAND_PROMPT
    if "kind" in row:
        row["kind"] = "hand"
    for col in ("area", "visible_area"):
        if col in row:
            row[col] = area
    if "status" in row:
        row["status"] = "unreviewed"
    table = pd.concat([features, pd.DataFrame([row])], ignore_index=True)
    labels_layer.features = table


def commit_mask(labels_layer, mask: np.ndarray, ref: PlaneRef) -> int:
    """Write ``mask`` into ``labels_layer`` as a NEW id on pixels that are 0 only.

    The id is `free_id` (never one of an object hidden by overlaps), and a layer with features gets
    a hand-made row (`add_hand_row`): no SAM3 score or prompt is inherited. Uses
    ``Labels.data_setitem`` so the edit enters the layer's undo history (Ctrl+Z undoes it).
    Returns the new id, or 0 when no free pixel was left.
    """
    data = labels_layer.data
    if tuple(data.shape[-2:]) != tuple(ref.shape):
        raise Sam3Error(
            f"The target Labels layer '{labels_layer.name}' is {data.shape[-2:]} pixels per plane; "
            f"the image plane is {ref.shape}."
        )
    ref = _target_ref(labels_layer, ref)
    plane = target_plane(data, ref)
    indices = commit_indices(data.shape, mask, ref, plane)
    if indices[0].size == 0:
        return 0
    new_id = free_id(labels_layer)
    if np.issubdtype(data.dtype, np.integer) and new_id > np.iinfo(data.dtype).max:
        raise Sam3Error(
            f"Label id {new_id} does not fit the layer's data type {data.dtype}; convert it first."
        )
    labels_layer.data_setitem(indices, new_id)  # one undo step
    add_hand_row(labels_layer, new_id, int(indices[0].size))
    return new_id
