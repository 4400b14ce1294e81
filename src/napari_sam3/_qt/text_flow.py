"""The Segment tab's text / exemplar flow: concepts (and exemplar boxes) -> one Labels layer.

A run keeps its raw candidates in the tab's ``last_text``, so moving the result controls re-filters
them (threshold, min area, refinement, hidden-objects layer) on the tab's ``post_runner`` without a
model call. The functions take the tab; layers are added through its ``adder``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._qt import click_flow
from napari_sam3._qt.worker import Job, notify_error
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.review import carry_decisions


@dataclass
class TextResult:
    """The last text/exemplar result: raw candidates (above the engine floor) and where they belong."""

    raw: Candidates
    ref: L.PlaneRef
    image: object
    prompt_text: str
    layer: object = None
    hidden_layer: object = None


def run_text(tab) -> Job | None:
    """Run concepts (and exemplar boxes) on the current plane; a new Labels layer results."""
    image = tab.image_layer()
    ref = tab.ref_or_notify(image)
    if ref is None:
        return None
    concepts = [c.strip() for c in tab.concepts_edit.text().split(",") if c.strip()]
    boxes = np.zeros((0, 4), np.float32)
    box_labels = np.zeros(0, np.int64)
    _, box_layer = click_flow.prompt_layers(tab, image)
    exemplar_mode = tab.box_mode_combo.currentIndex() == 0
    if box_layer is not None and exemplar_mode:
        boxes, box_labels = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
    if not concepts and len(boxes) == 0:
        if not exemplar_mode:
            return tab.run_clicks()
        notify_error(Sam3Error("Type a concept (e.g. 'nucleus') or draw an exemplar box."))
        return None
    data = image.data
    pre = tab.preprocessing()
    source, device = tab.model_settings()
    holder = tab.holder
    prompt_text = ", ".join(concepts) if concepts else "exemplars"
    settings = tab.filter_settings()

    def make():
        engine = yield from holder.iter_engine(source, device)
        yield Progress("Reading the image plane...")
        plane = L.read_plane(data, ref)
        if len(boxes):
            text = ", ".join(concepts) if concepts else None
            raw = yield from engine.iter_exemplars(
                plane, boxes, box_labels, text=text, preprocessing=pre, rgb=ref.rgb
            )
        else:
            raw = yield from engine.iter_text(plane, concepts, preprocessing=pre, rgb=ref.rgb)
        yield Progress(f"Building the label image ({len(raw)} candidates)...")
        prepared = L.prepare_result(raw, ref, prompt_text, *settings)
        return raw, B.build_result_layers(prepared, ref)

    return tab.submit(
        make,
        f"SAM3: {prompt_text}",
        "text",
        lambda out: _on_text_result(tab, out, ref, image, prompt_text),
        status=f"Running '{prompt_text}' on {ref.layer_name}{ref.slice_text()}...",
    )


def _on_text_result(tab, out, ref, image, prompt_text: str) -> None:
    raw, prepared = out
    if not tab._image_still_valid(image, ref):
        return
    tab.last_text = TextResult(raw=raw, ref=ref, image=image, prompt_text=prompt_text)
    apply_prepared(tab, tab.last_text, prepared)
    if prepared["settings"] != tab.filter_settings():  # slider moved during the run
        tab._refilter_timer.start()


def apply_filters(tab) -> Job | None:
    """Re-filter the last text result (no model call) in a worker; the layer updates after."""
    res = tab.last_text
    if res is None:
        return None
    settings = tab.filter_settings()
    # Layers the result will need (built in the worker): ones the user removed, or not made yet.
    build = (not tab.adder.alive(res.layer), not tab.adder.alive(res.hidden_layer))

    def make():
        yield Progress("Re-filtering the last result...")
        prepared = L.prepare_result(res.raw, res.ref, res.prompt_text, *settings)
        return B.build_result_layers(prepared, res.ref, *build)

    job = Job(
        make=make,
        desc="SAM3: re-filter",
        group="refilter",
        on_result=lambda prepared: apply_prepared(tab, res, prepared),
        on_error=tab._on_error,
    )
    return tab.post_runner.submit(job, replace_running=True)


def apply_prepared(tab, res: TextResult, prepared: dict) -> None:
    """Main thread: put prepared data into the result layer (created on first use)."""
    if res is not tab.last_text or res.image not in tab.viewer.layers:
        return
    cands, data, kwargs = prepared["cands"], prepared["data"], prepared["kwargs"]
    if tab.adder.alive(res.layer):
        res.layer.data = data
        # review decisions (status column) follow their objects through the re-filter
        res.layer.features = carry_decisions(res.layer.features, kwargs["features"])
    else:
        layer = prepared.get("layer")
        res.layer = B.labels_layer(data, kwargs) if layer is None else layer
        tab.adder.add(res.layer)
    res.hidden_layer = tab.adder.put_hidden(res, prepared)
    feats = kwargs["features"]
    n_hidden = int((feats["visible_area"] == 0).sum()) if len(feats) else 0
    extra = f", {n_hidden} hidden by overlaps" if n_hidden else ""
    tab.set_status(
        f"{len(cands)} objects ({len(res.raw)} candidates before filtering){extra} "
        f"in '{res.layer.name}'."
    )
