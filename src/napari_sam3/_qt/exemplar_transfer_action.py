"""The Segment tab's "Use these exemplars on…": boxes drawn on one image find objects in another.

The exemplar boxes on the chosen image's current plane are encoded once on that image (SAM3's own
exemplar tokens, `Sam3Engine.exemplar_prompt`); the target image's plane shown now is searched
with them (`Sam3Engine.segment_with`). The result is a normal Segment result layer on the target
(scores, status column for review). The tab needs only `add_exemplar_transfer_controls`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari.click_session import prompt_layers
from napari_sam3._qt.image_choice import fill_combo, layers_of, watch_layer_list
from napari_sam3._qt.worker import Job, notify_error
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import concepts_typed
from napari_sam3.core.results.review import with_status


def add_exemplar_transfer_controls(tab, layout) -> None:
    """A "Use these exemplars on…" button and the target image chooser."""
    row = QHBoxLayout()
    tab.exemplar_target_combo = QComboBox()
    tab.exemplar_target_combo.setToolTip("The image to search with the exemplars drawn here.")
    tab.exemplar_transfer_btn = QPushButton("Use these exemplars on…")
    tab.exemplar_transfer_btn.setToolTip(
        "Find objects like the exemplar boxes of this image in another image (the boxes are "
        "encoded on this image, as SAM3 encodes exemplars, and applied to the other one)."
    )
    tab.exemplar_transfer_btn.clicked.connect(lambda: start_exemplar_transfer(tab))
    row.addWidget(tab.exemplar_transfer_btn)
    row.addWidget(tab.exemplar_target_combo)
    layout.addLayout(row)

    def refresh(event=None) -> None:
        names = [layer.name for layer in layers_of(tab.viewer, "image")]
        fill_combo(tab.exemplar_target_combo, names)

    tab._watched += watch_layer_list(tab.viewer, refresh)
    refresh()


def start_exemplar_transfer(tab, target=None) -> Job | None:
    """Submit the run; None (after telling the user why) if it cannot start."""
    image = tab.image_layer()
    if target is None:
        name = tab.exemplar_target_combo.currentText()
        target = tab.viewer.layers[name] if name in tab.viewer.layers else None
    try:
        if target is None:
            raise Sam3Error("Choose the image to use the exemplars on.")
        ref = tab.current_ref(image)
        target_ref = tab.current_ref(target)
        _, box_layer = prompt_layers(tab.viewer, image)
        boxes = np.zeros((0, 4), np.float32)
        box_labels = np.zeros(0, np.int64)
        if box_layer is not None:
            boxes, box_labels = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
        if not len(boxes):
            raise Sam3Error(
                f"Draw exemplar boxes on '{ref.layer_name}' (on the slice shown) first."
            )
    except Sam3Error as exc:
        notify_error(exc)
        return None
    try:
        concepts = concepts_typed(tab.concepts_edit.text())
    except Sam3Error as exc:
        notify_error(exc)
        return None
    text = ", ".join(concepts) or None
    data, target_data = image.data, target.data
    pre, holder = tab.preprocessing(), tab.holder
    source, device = tab.model_settings()
    settings = tab.filter_settings()
    prompt_text = f"exemplars from {ref.layer_name}"

    def make():
        engine = yield from holder.iter_engine(source, device)
        yield Progress("Reading the planes...")
        prompt = yield from engine.iter_exemplar_prompt(
            L.read_plane(data, ref), boxes, box_labels, text, preprocessing=pre, rgb=ref.rgb
        )
        raw = yield from engine.iter_segment_with(
            L.read_plane(target_data, target_ref), prompt, preprocessing=pre, rgb=target_ref.rgb
        )
        yield Progress(f"Building the label image ({len(raw)} candidates)...")
        prepared = L.prepare_filtered(raw, target_ref, prompt_text, settings)
        kwargs = dict(prepared.kwargs)
        kwargs["features"] = with_status(kwargs["features"])
        return raw, B.labels_layer(prepared.data, kwargs)

    def done(out) -> None:
        raw, layer = out
        if not tab.session.image_still_valid(target, target_ref):
            return
        tab.adder.add(layer)
        tab.set_status(f"{len(layer.features)} objects like the exemplars in '{layer.name}'.")

    return tab.submit(
        make,
        f"SAM3: {prompt_text}",
        "exemplar-transfer",
        done,
        status=f"Searching {target_ref.layer_name} with the exemplars of {ref.layer_name}...",
    )


__all__ = ["add_exemplar_transfer_controls", "start_exemplar_transfer"]
