"""The Segment tab's "Adapt SAM3 to these results" and "Save adapter..." buttons.

The run lives in `_napari.segment_session.SegmentSession.run_adapt` (`_napari.adapt_session`):
an adapter trained on the last text result as the user left it, in a worker with progress, loss,
time left and Cancel (the tab's usual run controls); a better adapter becomes the one the next
Segment and Count runs use. This module only wires the buttons. The tab needs only
`add_adapt_button(tab, layout)`.
"""

from __future__ import annotations

from napari_sam3._qt.tab_base import add_row, make_button, save_to
from napari_sam3._qt.worker import Job, notify_error, notify_info
from napari_sam3.core.errors import Sam3Error


def add_adapt_button(tab, layout) -> None:
    tab.adapt_btn = make_button(
        "Adapt SAM3 to these results",
        "Teach SAM3 your objects from the last result as you fixed it (rejected objects count "
        "as mistakes to avoid). Part of the objects is held out and scored before -> after; the "
        "adapted model is used by the next runs only when it is better there.",
        lambda: start_adapt(tab),
    )
    tab.save_adapter_btn = make_button(
        "Save adapter...",
        "Write the last adaptation to a .sam3-adapter.safetensors file (with its before -> after "
        "and provenance) for the CLI (--adapter) or a later session (Model section).",
        lambda: save_adapter(tab),
    )
    tab.save_adapter_btn.setEnabled(False)
    add_row(layout, tab.adapt_btn, tab.save_adapter_btn)

    def on_adapted(event) -> None:
        tab.save_adapter_btn.setEnabled(True)
        notify_info(event.value.message)

    tab.session.events.adapted.connect(on_adapted)


def save_adapter(tab, path: str | None = None):
    """Write the last adaptation (asks where when ``path`` is None); returns the path or None."""
    adapted = tab.session.last_adapt
    if adapted is None:
        return None
    concept = adapted.adapter.meta.get("concept", "sam3")
    dialog = ("Save adapter", f"{concept}.sam3-adapter.safetensors", "*.safetensors")
    return save_to(tab, path, dialog, tab.session.save_adapter)


def start_adapt(tab, settings=None) -> Job | None:
    """Submit an adaptation on the tab's last text result; None if it cannot start."""
    try:
        return tab.session.run_adapt(tab.model_settings(), settings)
    except Sam3Error as exc:
        notify_error(exc)
        return None


__all__ = ["add_adapt_button", "save_adapter", "start_adapt"]
