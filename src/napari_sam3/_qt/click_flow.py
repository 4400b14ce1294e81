"""The Segment tab's click / box-prompt flow: prompt layers -> 3 candidates -> preview -> commit.

Clicks (and, in box-prompt mode, the last box) on the current plane go to SAM3's tracker head, which
returns 3 candidate masks. The best one is shown in the single "SAM3 candidate" Labels layer; C
cycles through them and K writes the shown one as a new id into a Labels layer (Ctrl+Z there undoes
it). The functions take the tab and use its state: ``last_clicks``, ``preview_layer``,
``_click_timer`` (debounces clicks) and ``_wired`` (layers whose keys call the tab).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._qt.worker import Job, notify_error, notify_info
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.refine import refine_masks

NEW_TARGET = "New layer: SAM3 annotations"


@dataclass
class ClickResult:
    """The last click/box result: 3 candidates, the one shown, and where it belongs."""

    cands: Candidates
    ref: L.PlaneRef
    image: object
    index: int = 0


def prompt_layers(tab, image):
    """The (clicks, boxes) prompt layers of ``image``; None where there is none."""
    return P.find_prompt_layer(tab.viewer, "clicks", image), P.find_prompt_layer(
        tab.viewer, "boxes", image
    )


def add_prompt_layers(tab):
    """Add (or reuse) the clicks and boxes layers of the chosen image, with the tab's keys bound."""
    image = tab.image_layer()
    ref = tab.ref_or_notify(image)
    if ref is None:
        return None, None
    clicks = P.make_clicks_layer(tab.viewer, image, ref)
    boxes = P.make_boxes_layer(tab.viewer, image, ref)
    for layer in (clicks, boxes):
        if layer not in tab._wired:
            P.bind_prompt_keys(layer, tab._on_sign_toggled, tab.next_candidate, tab.commit)
            layer.events.data.connect(tab._on_prompt_data)
            tab._watched.append((layer.events.data, tab._on_prompt_data))
            tab._wired.add(layer)
    ensure_preview_layer(tab, ref)  # created now, so the first click adds no layer
    tab.viewer.layers.selection.active = clicks
    return clicks, boxes


def ensure_preview_layer(tab, ref: L.PlaneRef, data=None, features=None):
    """The one 'SAM3 candidate' Labels layer, placed on ``ref``'s plane."""
    if data is None:
        data = np.zeros(ref.label_shape(), np.uint8)
    layer = tab.preview_layer
    if layer is not None and layer in tab.viewer.layers:
        layer.data = data
        B.set_changed_geometry(layer, L.placed_geometry(ref))
        if features is not None:
            layer.features = features
        return layer
    tab.preview_layer = tab.viewer.add_labels(
        data,
        name="SAM3 candidate",
        opacity=0.6,
        features=features,
        **L.placed_geometry(ref),
    )
    P.bind_prompt_keys(tab.preview_layer, None, tab.next_candidate, tab.commit)
    tab._wired.add(tab.preview_layer)
    return tab.preview_layer


def toggle_sign(tab) -> None:
    """Flip the sign of new clicks and boxes on the chosen image's prompt layers."""
    image = tab.image_layer()
    layers = [ly for ly in prompt_layers(tab, image) if ly is not None] if image else []
    if not layers:
        return
    sign = "negative" if P.current_sign(layers[0]) == "positive" else "positive"
    for layer in layers:
        P.set_sign(layer, sign)
    tab._on_sign_toggled(sign)


def on_prompt_data(tab, event=None) -> None:
    """A finished edit of a prompt layer re-runs the clicks (debounced)."""
    action = str(getattr(event, "action", "changed"))
    if action.endswith(("adding", "removing", "changing")):
        return
    source = getattr(event, "source", None)
    role = (source.metadata.get(P.ROLE_KEY) or {}).get("role") if source is not None else None
    if role == "boxes" and tab.box_mode_combo.currentIndex() == 0:
        return  # exemplar boxes wait for Run
    tab._click_timer.start()


def run_clicks(tab) -> Job | None:
    """Run the tracker head on the clicks (and a box prompt) of the current plane."""
    image = tab.image_layer()
    if image is None:
        return None
    ref = tab.ref_or_notify(image)
    if ref is None:
        return None
    clicks_layer, box_layer = prompt_layers(tab, image)
    xy = np.zeros((0, 2), np.float32)
    labels = np.zeros(0, np.int64)
    if clicks_layer is not None:
        xy, labels = L.points_in_plane(clicks_layer.data, P.signs_of(clicks_layer), ref)
    box = None
    if box_layer is not None and tab.box_mode_combo.currentIndex() == 1:
        boxes, _ = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
        if len(boxes):
            box = boxes[-1]  # the tracker takes one box: the last one drawn
    if len(xy) == 0 and box is None:
        clear_preview(tab)
        return None
    data = image.data
    pre = tab.preprocessing()
    source, device = tab.model_settings()
    holder = tab.holder

    def make():
        engine = yield from holder.iter_engine(source, device)
        plane = L.read_plane(data, ref)
        return (
            yield from engine.iter_points(
                plane,
                points_xy=xy if len(xy) else None,
                point_labels=labels if len(xy) else None,
                box_xyxy=box,
                multimask=True,
                preprocessing=pre,
                rgb=ref.rgb,
            )
        )

    return tab.submit(
        make, "SAM3: clicks", "clicks", lambda c: _on_click_result(tab, c, ref, image)
    )


def _on_click_result(tab, cands: Candidates, ref, image) -> None:
    if not tab._image_still_valid(image, ref):
        return
    scores = cands.iou_scores if cands.iou_scores is not None else cands.scores
    best = int(np.nanargmax(scores)) if len(cands) else 0
    tab.last_clicks = ClickResult(cands=cands, ref=ref, image=image, index=best)
    show_candidate(tab)


def candidate_mask(tab) -> np.ndarray | None:
    """The shown candidate's mask with the tab's refinement, or None."""
    res = tab.last_clicks
    if res is None or len(res.cands) == 0:
        return None
    one = res.cands.subset([res.index])
    one = refine_masks(one, tab.refine_combo.currentText())
    return one.masks[0]


def show_candidate(tab) -> None:
    """Put the current candidate into the preview layer and describe it."""
    res = tab.last_clicks
    mask = candidate_mask(tab)
    if res is None or mask is None:
        clear_preview(tab)
        return
    data = mask.astype(np.uint8).reshape(res.ref.label_shape())
    scores = res.cands.iou_scores if res.cands.iou_scores is not None else res.cands.scores
    features = {
        "index": [1],
        "candidate": [res.index + 1],
        "iou_score": [float(scores[res.index])],
    }
    created = tab.preview_layer is None or tab.preview_layer not in tab.viewer.layers
    ensure_preview_layer(tab, res.ref, data, features)
    clicks, _ = prompt_layers(tab, res.image)
    if created and clicks is not None:  # keep clicking without re-selecting the clicks layer
        tab.viewer.layers.selection.active = clicks
    tab.candidate_label.setText(
        f"Candidate {res.index + 1}/{len(res.cands)}, predicted IoU {float(scores[res.index]):.2f}"
    )


def clear_preview(tab) -> None:
    """Forget the candidates and empty the preview layer."""
    tab.last_clicks = None
    if tab.preview_layer is not None and tab.preview_layer in tab.viewer.layers:
        tab.preview_layer.data = np.zeros_like(tab.preview_layer.data)
    tab.candidate_label.setText("No candidate yet: click on the clicks layer.")


def next_candidate(tab) -> None:
    """Show the next of the candidates (wrapping round)."""
    res = tab.last_clicks
    if res is None or len(res.cands) == 0:
        return
    res.index = (res.index + 1) % len(res.cands)
    show_candidate(tab)


def target_layer(tab, ref: L.PlaneRef, image):
    """The Labels layer commits go into; creates 'SAM3 annotations' (image-sized) if asked."""
    name = tab.target_combo.currentText()
    if name and name != NEW_TARGET and name in tab.viewer.layers:
        return tab.viewer.layers[name]
    existing = f"{ref.layer_name} annotations"
    if existing in tab.viewer.layers:
        layer = tab.viewer.layers[existing]
    else:
        shape = tuple(L._level0(image.data).shape)
        shape = shape[:-1] if image.rgb else shape
        layer = tab.viewer.add_labels(
            np.zeros(shape, np.uint32), name=existing, **L.full_geometry(ref)
        )
    tab.refresh_layer_choices()
    tab.target_combo.setCurrentText(layer.name)
    return layer


def commit(tab) -> int:
    """Write the shown candidate as a new id into the target layer (undo: Ctrl+Z there)."""
    res = tab.last_clicks
    mask = candidate_mask(tab)
    if res is None or mask is None:
        tab.set_status("Nothing to commit: click on the object first.")
        return 0
    if res.image not in tab.viewer.layers:
        notify_info("The image of this candidate was removed; nothing committed.")
        return 0
    try:
        target = tab.target_layer(res.ref, res.image)
        new_id = L.commit_mask(target, mask, res.ref)
    except Sam3Error as exc:
        notify_error(exc)
        return 0
    tab.set_status(
        f"Committed as label {new_id} in '{target.name}' (Ctrl+Z on that layer undoes it)."
        if new_id
        else "Nothing committed: every pixel of the candidate is already labelled."
    )
    clicks, boxes = prompt_layers(tab, res.image)
    tab.last_clicks = None
    for layer in (clicks, boxes if tab.box_mode_combo.currentIndex() == 1 else None):
        if layer is not None and len(layer.data):
            layer.data = np.zeros((0, layer.ndim)) if layer is clicks else []
    tab._click_timer.stop()
    clear_preview(tab)
    return new_id
