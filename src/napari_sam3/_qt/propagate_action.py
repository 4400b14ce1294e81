"""The Segment tab's "New object" and "Propagate clicks" buttons.

The run lives in `_napari.segment_session.SegmentSession.run_propagation` (clicks and boxes on any
slices -> SAM3's video tracker -> one "SAM3 objects: <image>" Labels layer with a review
``status``); this module only reads the tab and calls it. The tab needs only
`add_propagate_controls(tab, layout)`.
"""

from __future__ import annotations

from napari_sam3._qt.tab_base import add_row, make_button
from napari_sam3._qt.worker import Job, notify_error
from napari_sam3.core.errors import Sam3Error


def add_propagate_controls(tab, layout) -> None:
    """Add the "New object" and "Propagate clicks through slices" buttons to ``layout``."""
    tab.new_object_btn = make_button(
        "New object",
        "The next clicks and boxes belong to a new object (its own id).",
        lambda: start_new_object(tab),
    )
    tab.propagate_btn = make_button(
        "Propagate clicks through slices",
        "Carry the clicked / boxed objects through the whole stack with SAM3's video tracker "
        "(clicks on other slices correct the object there; each object keeps its id).",
        lambda: start_propagation(tab),
    )
    add_row(layout, tab.new_object_btn, tab.propagate_btn)


def start_new_object(tab) -> int | None:
    """Next clicks and boxes on the chosen image start a new object (prompt layers added if none)."""
    image = tab.image_layer()
    if image is None:
        return None
    obj = tab.session.new_object(image)
    if obj is None:
        tab.add_prompt_layers()
        obj = tab.session.new_object(image)
    return obj


def start_propagation(tab) -> Job | None:
    """Submit a propagation of the chosen image's clicked objects; None if it cannot start."""
    image = tab.image_layer()
    try:
        return tab.session.run_propagation(tab.plane_run(image))
    except Sam3Error as exc:
        notify_error(exc)
        return None


__all__ = ["add_propagate_controls", "start_new_object", "start_propagation"]
