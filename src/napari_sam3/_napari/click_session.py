"""Clicks and a box prompt -> 3 candidates -> the preview layer -> commit. Qt-free run state.

Clicks (and, in box-prompt mode, the last box) on the current plane go to SAM3's tracker head, which
returns 3 candidate masks. The best one is shown in the single "SAM3 candidate" Labels layer;
`next_candidate` cycles through them and `commit` writes the shown one as a new id into a Labels
layer (Ctrl+Z there undoes it). The Qt tab reads its controls, debounces clicks and calls these
methods; it hears back through ``events`` (``candidate``: the text describing the shown candidate;
``preview``: the preview layer was created, bind its keys; ``target``: the layer commits go into).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.utils.events import EmitterGroup

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari.notify import notify_error, notify_info
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.refine import refine_masks

NEW_PREFIX = "New layer: "
NEW_TARGET = NEW_PREFIX + "annotations"  # any choice starting with NEW_PREFIX makes the new layer
PREVIEW_NAME = "SAM3 candidate"
ANNOTATIONS_KIND = "annotations"  # ``metadata["sam3"]["kind"]`` of an image's commit layer


def annotations_name(image_name: str) -> str:
    """The full-size layer that collects an image's committed objects."""
    return f"{image_name} annotations"


def new_target_text(image_name: str | None) -> str:
    """The Commit-into choice that makes the layer, named as the layer it makes."""
    return NEW_PREFIX + annotations_name(image_name) if image_name else NEW_TARGET


def is_preview(layer) -> bool:
    """The candidate preview layer (never a commit target: a commit empties it)."""
    meta = layer.metadata.get("sam3", {}) if isinstance(layer.metadata, dict) else {}
    return meta.get("kind") == "candidate"


NO_CANDIDATE = "No candidate yet: click on the clicks layer."


@dataclass
class ClickResult:
    """The last click/box result: 3 candidates, the one shown, and where it belongs."""

    cands: Candidates
    ref: L.PlaneRef
    image: object
    index: int = 0

    def scores(self) -> np.ndarray:
        return self.cands.iou_scores if self.cands.iou_scores is not None else self.cands.scores


def prompt_layers(viewer, image):
    """The (clicks, boxes) prompt layers of ``image``; None where there is none."""
    return P.find_prompt_layer(viewer, "clicks", image), P.find_prompt_layer(viewer, "boxes", image)


class ClickSession:
    """The click / box-prompt candidates of one viewer, their preview and where commits go.

    ``submit(make, desc, group, on_result, status=None)`` runs a job (the Qt shell's runner);
    ``status(text)`` reports to the user; ``still_valid(image, ref)`` says whether a finished run's
    image is still there with the shape it ran on.
    """

    def __init__(self, viewer, holder, submit, status, still_valid) -> None:
        self.viewer = viewer
        self.holder = holder
        self._submit = submit
        self._status = status
        self._still_valid = still_valid
        self.last_clicks: ClickResult | None = None
        self.preview_layer = None
        self.refine = "Low"  # the result controls' mask refinement, applied to the preview
        self.events = EmitterGroup(source=self, candidate=None, preview=None, target=None)
        self._watch = None  # (layer, id) of the last commit, until it is undone

    # ------------------------------------------------------------------ prompt layers
    def add_prompt_layers(self, image, ref: L.PlaneRef):
        """Add (or reuse) the clicks and boxes layers of ``image``, and the preview layer."""
        clicks = P.make_clicks_layer(self.viewer, image, ref)
        boxes = P.make_boxes_layer(self.viewer, image, ref)
        self.ensure_preview_layer(ref)  # created now, so the first click adds no layer
        return clicks, boxes

    def toggle_sign(self, image) -> str | None:
        """Flip the sign of new clicks and boxes on ``image``'s prompt layers; the new sign."""
        layers = [ly for ly in prompt_layers(self.viewer, image) if ly is not None] if image else []
        if not layers:
            return None
        sign = "negative" if P.current_sign(layers[0]) == "positive" else "positive"
        for layer in layers:
            P.set_sign(layer, sign)
        return sign

    def ensure_preview_layer(self, ref: L.PlaneRef, data=None, features=None):
        """The one 'SAM3 candidate' Labels layer, placed on ``ref``'s plane."""
        if data is None:
            data = np.zeros(ref.label_shape(), np.uint8)
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            B.set_changed_geometry(layer, L.placed_geometry(ref))
            if features is not None:
                layer.features = features
            return layer
        self.preview_layer = self.viewer.add_labels(
            data,
            name=PREVIEW_NAME,
            opacity=0.6,
            metadata={"sam3": {"kind": "candidate"}},  # known from its first 'inserted' event
            features=features,
            **L.placed_geometry(ref),
        )
        self.events.preview(value=self.preview_layer)
        return self.preview_layer

    # ------------------------------------------------------------------ run
    def run_clicks(
        self, image, ref: L.PlaneRef, box_prompt: bool, preprocessing: Preprocessing, model
    ):
        """Run the tracker head on the clicks (and, if ``box_prompt``, the last box) of ``ref``.

        ``model`` is ``(source, device)``. Returns the submitted job, or None with nothing to run.
        """
        clicks_layer, box_layer = prompt_layers(self.viewer, image)
        xy = np.zeros((0, 2), np.float32)
        labels = np.zeros(0, np.int64)
        if clicks_layer is not None:
            xy, labels = L.points_in_plane(clicks_layer.data, P.signs_of(clicks_layer), ref)
        box = None
        if box_layer is not None and box_prompt:
            boxes, _ = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
            if len(boxes):
                box = boxes[-1]  # the tracker takes one box: the last one drawn
        if len(xy) == 0 and box is None:
            self.clear_preview()
            return None
        data, holder = image.data, self.holder
        source, device = model

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
                    preprocessing=preprocessing,
                    rgb=ref.rgb,
                )
            )

        return self._submit(
            make, "SAM3: clicks", "clicks", lambda c: self._on_result(c, ref, image)
        )

    def _on_result(self, cands: Candidates, ref: L.PlaneRef, image) -> None:
        if not self._still_valid(image, ref):
            return
        res = ClickResult(cands=cands, ref=ref, image=image)
        res.index = int(np.nanargmax(res.scores())) if len(cands) else 0
        self.last_clicks = res
        self.show_candidate()

    # ------------------------------------------------------------------ candidates
    def candidate_mask(self) -> np.ndarray | None:
        """The shown candidate's mask with the current refinement, or None."""
        res = self.last_clicks
        if res is None or len(res.cands) == 0:
            return None
        one = refine_masks(res.cands.subset([res.index]), self.refine)
        return one.masks[0]

    def show_candidate(self) -> None:
        """Put the current candidate into the preview layer and describe it."""
        res = self.last_clicks
        mask = self.candidate_mask()
        if res is None or mask is None:
            self.clear_preview()
            return
        data = mask.astype(np.uint8).reshape(res.ref.label_shape())
        score = float(res.scores()[res.index])
        features = {"index": [1], "candidate": [res.index + 1], "iou_score": [score]}
        created = self.preview_layer is None or self.preview_layer not in self.viewer.layers
        self.ensure_preview_layer(res.ref, data, features)
        clicks, _ = prompt_layers(self.viewer, res.image)
        if created and clicks is not None:  # keep clicking without re-selecting the clicks layer
            self.viewer.layers.selection.active = clicks
        text = f"Candidate {res.index + 1}/{len(res.cands)}, predicted IoU {score:.2f}"
        self.events.candidate(value=text)

    def clear_preview(self) -> None:
        """Forget the candidates and empty the preview layer."""
        self.last_clicks = None
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.data = np.zeros_like(self.preview_layer.data)
        self.events.candidate(value=NO_CANDIDATE)

    def next_candidate(self) -> None:
        """Show the next of the candidates (wrapping round)."""
        res = self.last_clicks
        if res is None or len(res.cands) == 0:
            return
        res.index = (res.index + 1) % len(res.cands)
        self.show_candidate()

    # ------------------------------------------------------------------ commit
    def commit_targets(self, image_name: str | None) -> list[str]:
        """The Commit-into choices: the new layer (named as it will be), then the Labels layers
        a commit can go into (not the candidate preview, not the hidden-objects layers)."""
        names = [
            ly.name
            for ly in self.viewer.layers
            if ly.__class__.__name__ == "Labels"
            and not is_preview(ly)
            and not B.is_hidden_layer(ly)
        ]
        return [new_target_text(image_name), *names]

    def target_layer(self, name: str, ref: L.PlaneRef, image):
        """The Labels layer called ``name``, or (a ``NEW_PREFIX`` choice, or the preview layer)
        '<image> annotations', image-sized."""
        new_name = annotations_name(ref.layer_name)
        chosen = self.viewer.layers[name] if name in self.viewer.layers else None
        if chosen is not None and not name.startswith(NEW_PREFIX) and not is_preview(chosen):
            layer = chosen
        elif (found := self._annotations_of(ref)) is not None:
            layer = found
        elif new_name in self.viewer.layers:  # one painted by hand under that name
            layer = self.viewer.layers[new_name]
        else:
            shape = tuple(L.level0(image.data).shape)
            shape = shape[:-1] if image.rgb else shape
            layer = self.viewer.add_labels(
                np.zeros(shape, np.uint32),
                name=new_name,
                metadata={"sam3": {"kind": ANNOTATIONS_KIND, "image_uid": ref.image_uid}},
                **L.full_geometry(ref),
            )
        self.events.target(value=layer)
        return layer

    def _annotations_of(self, ref: L.PlaneRef):
        """The annotations layer made for ``ref`` 's image (found by metadata: renaming keeps it)."""
        for layer in self.viewer.layers:
            meta = layer.metadata.get("sam3") if isinstance(layer.metadata, dict) else None
            if isinstance(meta, dict) and meta.get("kind") == ANNOTATIONS_KIND:
                if meta.get("image_uid") == ref.image_uid:
                    return layer
        return None

    def _watch_commit(self, target, new_id: int) -> None:
        """Until the next commit: when ``new_id`` leaves ``target`` (Ctrl+Z), the status says so."""
        self._unwatch()
        if not new_id or not isinstance(target.data, np.ndarray):
            return
        # one pixel of it tells (an undo takes the whole commit back): O(1) per redraw
        pos = int(np.flatnonzero(target.data.reshape(-1) == new_id)[0])
        self._watch = (target, new_id, pos)
        target.events.set_data.connect(self._check_commit)

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch[0].events.set_data.disconnect(self._check_commit)
            self._watch = None

    def _check_commit(self, event=None) -> None:
        if self._watch is None:
            return
        target, new_id, pos = self._watch
        data = target.data
        if not isinstance(data, np.ndarray) or data.reshape(-1)[pos] != new_id:
            self._unwatch()
            self._status(f"Label {new_id} in '{target.name}' was undone: nothing committed now.")

    def commit(self, target_name: str, clear_boxes: bool) -> int:
        """Write the shown candidate as a new id into the target layer (undo: Ctrl+Z there).

        Clears the clicks (and, if ``clear_boxes``, the boxes) for the next object; the new id, or 0.
        """
        res = self.last_clicks
        mask = self.candidate_mask()
        if res is None or mask is None:
            self._status("Nothing to commit: click on the object first.")
            return 0
        if res.image not in self.viewer.layers:
            notify_info("The image of this candidate was removed; nothing committed.")
            return 0
        try:
            target = self.target_layer(target_name, res.ref, res.image)
            new_id = L.commit_mask(target, mask, res.ref)
        except Sam3Error as exc:
            notify_error(exc)
            return 0
        self._status(
            f"Committed as label {new_id} in '{target.name}' (Ctrl+Z on that layer undoes it)."
            if new_id
            else "Nothing committed: every pixel of the candidate is already labelled."
        )
        self._watch_commit(target, new_id)
        clicks, boxes = prompt_layers(self.viewer, res.image)
        self.last_clicks = None
        for layer in (clicks, boxes if clear_boxes else None):
            if layer is not None and len(layer.data):
                layer.data = np.zeros((0, layer.ndim)) if layer is clicks else []
        self.clear_preview()
        return new_id
