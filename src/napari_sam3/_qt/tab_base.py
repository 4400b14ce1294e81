"""What the Segment and Count tabs share: the engine and job handles, the image + channel choosers
kept in step with the viewer's layers, the status line, and error / cancel reporting."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from napari_sam3._napari import layers as L
from napari_sam3._qt.image_choice import ImageChoice, unwatch, watch_layer_list
from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, error_message, notify_error
from napari_sam3.core.errors import Sam3Error


def make_button(text: str, tooltip: str, slot) -> QPushButton:
    """A push button with its tooltip, calling ``slot()`` when clicked."""
    btn = QPushButton(text)
    btn.setToolTip(tooltip)
    btn.clicked.connect(lambda *_: slot())
    return btn


def add_row(layout, *widgets) -> None:
    """``widgets`` side by side as one row of ``layout``."""
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    layout.addLayout(row)


def ask_save_path(parent, title: str, suggested: str, file_filter: str) -> str | None:
    """The file the user chose in a save dialog (which asks before replacing one), or None."""
    path, _ = QFileDialog.getSaveFileName(parent, title, suggested, file_filter)
    return path or None


def save_to(parent, path: str | None, dialog: tuple[str, str, str], write):
    """``write(path)``; with no ``path``, to the file a save dialog ``(title, suggested, filter)``
    asks for (it asks before replacing one, so ``write`` may replace). None when the user
    cancels or the write fails (the error is notified)."""
    if path is None:
        path = ask_save_path(parent, *dialog)
        if path is None:
            return None
    try:
        return write(path)
    except (OSError, Sam3Error) as exc:
        notify_error(exc)
        return None


class PlaneTab(QWidget):
    """Base of a tab that runs on the current plane of a chosen image layer.

    A subclass builds its widgets in ``_build`` (calling `add_image_choice` on its form and creating
    ``self.status_label``) and may extend `refresh_layer_choices` and `disconnect_viewer`.
    """

    image_tooltip = ""
    channel_tooltip = "RGB images: use all three colours, or one channel as gray."

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(parent)
        self.viewer = viewer
        self.holder = holder
        self.runner = runner
        self.model_settings = model_settings  # callable -> (source, device)
        self._watched: list = []
        self.status_label = QLabel("")

    def add_image_choice(self, form: QFormLayout) -> None:
        """The "Image" and "Channel" rows; ``self.image_combo`` / ``self.channel_combo``."""
        self.images = ImageChoice(self.viewer, form, self.image_tooltip, self.channel_tooltip)
        self.image_combo = self.images.image_combo
        self.channel_combo = self.images.channel_combo

    def add_run_row(self, layout, text: str, slot, tooltip: str = "") -> QPushButton:
        """A row with the run button (``text`` -> ``slot``) and ``self.cancel_btn``; returns the
        run button."""
        row = QHBoxLayout()
        run_btn = QPushButton(text)
        run_btn.setToolTip(tooltip)
        run_btn.clicked.connect(slot)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the run at its next step.")
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(run_btn)
        row.addWidget(self.cancel_btn)
        layout.addLayout(row)
        return run_btn

    def watch_viewer(self) -> None:
        """Keep the choosers current as layers come and go (undone by `disconnect_viewer`)."""
        self._watched += watch_layer_list(self.viewer, self.refresh_layer_choices)
        self.refresh_layer_choices()

    def refresh_layer_choices(self, event=None) -> None:
        self.images.refresh()
        self.cancel_orphans()

    def cancel_orphans(self) -> None:
        """Cancel this tab's runs whose image left the viewer, and say so in the status line."""
        runner = self.runner
        for job in [runner.current, *runner.pending]:
            if job is None or job.done or job.owner is not self or job.image is None:
                continue
            if any(job.image is ly for ly in self.viewer.layers):
                continue
            job.cancel_reason = f"Cancelled: the image '{job.image.name}' was removed."
            waiting = job in runner.pending
            runner.cancel(job)
            if waiting or job.worker is None:
                self.set_status(job.cancel_reason)
            else:
                self.set_status(job.cancel_reason[:-1] + "; stopping at the next step...")

    def disconnect_viewer(self) -> None:
        unwatch(self._watched)
        self._watched = []

    def image_layer(self):
        """The chosen image layer, or None."""
        return self.images.layer()

    def current_ref(self, image=None) -> L.PlaneRef:
        """The plane of ``image`` (default: the chosen one) the viewer shows now."""
        image = image if image is not None else self.image_layer()
        if image is None:
            raise Sam3Error("Add an image layer (File > Open, or File > Open Sample) first.")
        dims = self.viewer.dims
        return L.plane_ref(image, dims.point, dims.displayed, dims.ndisplay)

    def ref_or_notify(self, image=None) -> L.PlaneRef | None:
        """`current_ref`, or None after telling the user what to fix (a button's first step)."""
        try:
            return self.current_ref(image)
        except Sam3Error as exc:
            notify_error(exc)
            return None

    def submit(self, make, desc: str, group: str, on_result, status: str | None = None) -> Job:
        """Run ``make`` on the shared runner (a newer run of ``group`` replaces this one), with
        progress in the status line and errors / cancellation reported by this tab."""
        job = Job(make=make, desc=desc, group=group, on_result=on_result, owner=self)
        job.image = self.image_layer()
        job.on_error = lambda exc, j=job: self._on_error(exc, j)
        job.on_progress = lambda p, j=job: self._on_progress(p, j)
        job.on_done = lambda state, j=job: self._on_done(state, j)
        if status is not None:
            self.set_status(status)
        return self.runner.submit(job, replace_running=True)

    def set_status(self, text: str) -> None:
        self._error_shown = False
        try:
            self.status_label.setText(text)
        except RuntimeError:  # widget already deleted
            pass

    def clear_error(self, text: str) -> None:
        """Replace an error in the status line (fixed since: e.g. the model loaded) by ``text``."""
        if getattr(self, "_error_shown", False):
            self.set_status(text)

    def cancel(self) -> None:
        self.runner.cancel_all()
        self.set_status("Cancelling at the next step...")

    def _on_progress(self, report, job: Job | None = None) -> None:
        self.set_status(report.message)
        if job is not None:
            job.last_message = report.message

    def _on_error(self, exc: BaseException, job: Job | None = None) -> None:
        if type(exc).__name__ == "Cancelled":
            self.set_status((job.cancel_reason if job else "") or "Cancelled.")
            return
        self.set_status(error_message(exc))
        self._error_shown = True
        notify_error(exc)

    def _on_done(self, state: str, job: Job | None = None) -> None:
        if state == "aborted":
            self.set_status((job.cancel_reason if job else "") or "Cancelled.")
        elif state == "returned" and job is not None:
            # a progress line ("Measuring the tracked objects") must not outlive its run
            last = job.last_message
            if last is not None and self.status_label.text() == last:
                self.set_status("Finished.")
