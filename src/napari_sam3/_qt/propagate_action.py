"""The Segment tab's "Propagate clicks": clicked / boxed objects carried through the stack.

Clicks and boxes on any slices of the chosen image's prompt layers (`_napari.propagation`) go to
SAM3's video tracker on the loaded model (`core.tracking.click_tracking`); the result is one
Labels layer "SAM3 objects: <image>" over the tracked axis, one id per object, with a review
``status`` in its features (the review panel lists it). "New object" makes the next clicks start
another object. The tab needs only `add_propagate_controls(tab, layout)`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QPushButton

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import propagation as PR
from napari_sam3._napari.click_session import prompt_layers
from napari_sam3._napari.track_result import can_track, stack_ref
from napari_sam3._qt.worker import Job, notify_error, notify_info
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress

TABLE_KEY = "sam3_track_table"


def add_propagate_controls(tab, layout) -> None:
    """Add the "New object" and "Propagate clicks through slices" buttons to ``layout``."""
    row = QHBoxLayout()
    tab.new_object_btn = QPushButton("New object")
    tab.new_object_btn.setToolTip("The next clicks and boxes belong to a new object (its own id).")
    tab.new_object_btn.clicked.connect(lambda: start_new_object(tab))
    tab.propagate_btn = QPushButton("Propagate clicks through slices")
    tab.propagate_btn.setToolTip(
        "Carry the clicked / boxed objects through the whole stack with SAM3's video tracker "
        "(clicks on other slices correct the object there; each object keeps its id)."
    )
    tab.propagate_btn.clicked.connect(lambda: start_propagation(tab))
    row.addWidget(tab.new_object_btn)
    row.addWidget(tab.propagate_btn)
    layout.addLayout(row)


def start_new_object(tab) -> int | None:
    image = tab.image_layer()
    if image is None:
        return None
    clicks, boxes = prompt_layers(tab.viewer, image)
    if clicks is None and boxes is None:
        clicks, boxes = tab.add_prompt_layers()
    obj = PR.new_object(clicks, boxes)
    notify_info(f"Clicks and boxes now belong to object {obj}.")
    return obj


def start_propagation(tab) -> Job | None:
    """Submit a propagation of the chosen image's clicked objects; None if it cannot start."""
    from napari_sam3.core.tracking.click_tracking import iter_track_objects

    image = tab.image_layer()
    try:
        ref = tab.current_ref(image)
        if not can_track(image):
            raise Sam3Error("Propagating needs a z or t stack; use the clicks on a single plane.")
        clicks, boxes = prompt_layers(tab.viewer, image)
        n_slices = int(image.data.shape[len(ref.index) - 1])
        prompts = PR.object_prompts(clicks, boxes, ref, n_slices)
    except Sam3Error as exc:
        notify_error(exc)
        return None
    data, pre, holder = image.data, tab.preprocessing(), tab.holder
    source, device = tab.model_settings()
    name = f"SAM3 objects: {image.name}"
    placed = stack_ref(ref)
    objects = sorted({p.obj_id for p in prompts})

    def make():
        engine = yield from holder.iter_engine(source, device)
        yield Progress("Reading the stack...")
        level0 = L._level0(data)
        stack = np.asarray(level0[ref.index[:-1]] if len(ref.index) > 1 else level0)
        result = yield from iter_track_objects(
            engine, stack, prompts, preprocessing=pre, rgb=ref.rgb
        )
        shape = (1,) * (len(ref.index) - 1) + result.labels.shape
        kwargs = {
            "name": name,
            "features": PR.propagation_features(result.table, objects),
            "metadata": {TABLE_KEY: result.table, "sam3_track_meta": result.meta},
            **L.placed_geometry(placed),
        }
        return result, B.labels_layer(result.labels.reshape(shape), kwargs)

    def done(out) -> None:
        result, layer = out
        if not tab.session.image_still_valid(image, ref):
            return
        tab.adder.add(layer)
        tab.set_status(
            f"Propagated {len(objects)} object(s) through {result.meta['frames']} slices "
            f"({result.meta['seconds_per_frame']:.1f} s per slice) in '{layer.name}'."
        )

    return tab.submit(
        make, "SAM3: propagate clicks", "track", done, status="Propagating the clicked objects..."
    )


__all__ = ["add_propagate_controls", "start_new_object", "start_propagation"]
