"""The Segment tab's "Use these exemplars on…": boxes drawn on one image find objects in another.

The run lives in `_napari.segment_session.SegmentSession.run_exemplar_transfer` (the boxes are
encoded on this image, the chosen target image's plane shown now is searched with them); its
result is an ordinary Segment result (re-filtered by the tab's controls, reviewable). This module
only reads the tab and calls it. The tab needs only `add_exemplar_transfer_controls`.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from napari_sam3._qt.image_choice import fill_combo, layers_of, watch_layer_list
from napari_sam3._qt.tab_base import add_row, make_button
from napari_sam3._qt.worker import Job, notify_error
from napari_sam3.core.errors import Sam3Error


def add_exemplar_transfer_controls(tab, layout) -> None:
    """A "Use these exemplars on…" button and the target image chooser."""
    tab.exemplar_target_combo = QComboBox()
    tab.exemplar_target_combo.setToolTip("The image to search with the exemplars drawn here.")
    tab.exemplar_transfer_btn = make_button(
        "Use these exemplars on…",
        "Find objects like the exemplar boxes of this image in another image (the boxes are "
        "encoded on this image, as SAM3 encodes exemplars, and applied to the other one).",
        lambda: start_exemplar_transfer(tab),
    )
    add_row(layout, tab.exemplar_transfer_btn, tab.exemplar_target_combo)

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
        run = tab.plane_run(image)
        target_run = tab.plane_run(target)
        return tab.session.run_exemplar_transfer(
            run, target_run, tab.concepts_edit.text(), tab.filter_settings()
        )
    except Sam3Error as exc:
        notify_error(exc)
        return None


__all__ = ["add_exemplar_transfer_controls", "start_exemplar_transfer"]
