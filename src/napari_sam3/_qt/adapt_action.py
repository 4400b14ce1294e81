"""The Segment tab's "Adapt SAM3 to these results" (`_napari.adapt_session`): trains an adapter
on the last text result as the user left it, in a worker with progress, loss, time left and
Cancel (the tab's usual run controls); a better adapter becomes the one the next Segment and Count
runs use, and the Model section says so. The tab needs only `add_adapt_button(tab, layout)`.
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QPushButton

from napari_sam3._napari.adapt_session import iter_adapt_result
from napari_sam3._qt.tab_base import ask_save_path
from napari_sam3._qt.worker import Job, notify_error, notify_info
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.prompts import parse_concepts
from napari_sam3.core.sam3.adapt import AdaptSettings


def add_adapt_button(tab, layout) -> None:
    tab.adapt_btn = QPushButton("Adapt SAM3 to these results")
    tab.adapt_btn.setToolTip(
        "Teach SAM3 your objects from the last result as you fixed it (rejected objects count "
        "as mistakes to avoid). Part of the objects is held out and scored before -> after; the "
        "adapted model is used by the next runs only when it is better there."
    )
    tab.adapt_btn.clicked.connect(lambda: start_adapt(tab))
    tab.save_adapter_btn = QPushButton("Save adapter...")
    tab.save_adapter_btn.setToolTip(
        "Write the last adaptation to a .sam3-adapter.safetensors file (with its before -> after "
        "and provenance) for the CLI (--adapter) or a later session (Model section)."
    )
    tab.save_adapter_btn.setEnabled(False)
    tab.save_adapter_btn.clicked.connect(lambda: save_adapter(tab))
    row = QHBoxLayout()
    row.addWidget(tab.adapt_btn)
    row.addWidget(tab.save_adapter_btn)
    layout.addLayout(row)


def save_adapter(tab, path: str | None = None):
    """Write the last adaptation (asks where when ``path`` is None); returns the path or None."""
    from napari_sam3.io.adapter_file import write_adapter

    adapted = getattr(tab, "last_adapt", None)
    if adapted is None:
        return None
    if path is None:  # the dialog asks before replacing a file
        concept = adapted.adapter.meta.get("concept", "sam3")
        path = ask_save_path(
            tab, "Save adapter", f"{concept}.sam3-adapter.safetensors", "*.safetensors"
        )
        if path is None:
            return None
    try:
        written = write_adapter(adapted.adapter, path, overwrite=True)
    except (Sam3Error, OSError) as exc:
        notify_error(exc)
        return None
    tab.set_status(f"Adapter written to {written}.")
    return written


def start_adapt(tab, settings: AdaptSettings | None = None) -> Job | None:
    """Submit an adaptation on the tab's last text result; None if it cannot start."""
    result = tab.session.last_text
    try:
        if result is None or result.layer is None:
            raise Sam3Error("Run a text prompt first: adapting learns from its result layer.")
        concepts = parse_concepts(result.prompt_text)
        if len(concepts) != 1:
            raise Sam3Error("Adapt to one concept at a time: run a single concept first.")
    except Sam3Error as exc:
        notify_error(exc)
        return None
    settings = settings or AdaptSettings(concepts[0])
    holder = tab.holder
    source, device = tab.model_settings()

    def make():
        return (yield from iter_adapt_result(holder, source, device, result, settings))

    def done(adapted) -> None:
        tab.last_adapt = adapted
        tab.save_adapter_btn.setEnabled(True)
        tab.set_status(adapted.message)
        notify_info(adapted.message)

    return tab.submit(
        make, f"SAM3: adapting to '{concepts[0]}'", "adapt", done, status="Adapting SAM3..."
    )


__all__ = ["add_adapt_button", "save_adapter", "start_adapt"]
