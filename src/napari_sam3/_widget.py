"""The SAM3 dock widget: model settings on top, then the "Segment" and "Count" tabs.

Only wiring: the tabs read their controls and call their Qt-free sessions (`_napari.segment_session`,
`_napari.count_session`), which hold the run state and submit core generators through one shared
`JobRunner` (so one model is never driven from two threads).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_sam3._napari.identity import unwrap
from napari_sam3._qt.count_tab import CountTab
from napari_sam3._qt.export_box import ExportBox
from napari_sam3._qt.segment_tab import SegmentTab
from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, notify_error
from napari_sam3.core.defaults import DEVICES, default_model


class Sam3Widget(QWidget):
    """SAM3 in napari: segment with text, exemplars, clicks and boxes; count objects.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    engine_loader : callable, optional
        ``loader(source=..., device=...) -> engine``; default ``Sam3Engine.load``. For tests.
    """

    def __init__(self, napari_viewer, engine_loader=None, parent=None):
        super().__init__(parent)
        # napari hands plugins a PublicOnlyProxy whose layer list returns a new proxy per access;
        # the tabs keep layer objects, so they work on the real viewer (see _napari.identity).
        self.viewer = unwrap(napari_viewer)
        self.holder = EngineHolder(engine_loader)
        self.runner = JobRunner()
        self._closed = False
        self._had_parent = parent is not None

        # everything scrolls: the Segment tab is taller than napari's default window, and a dock
        # that does not scroll squeezes its rows on top of each other instead
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        scroll.setWidget(body)
        outer.addWidget(scroll)
        layout = QVBoxLayout(body)
        model_form = QFormLayout()
        self.model_edit = QLineEdit(default_model())
        self.model_edit.setToolTip(
            "Hugging Face hub id (default facebook/sam3, gated: accept the licence on its hub page "
            "and run `hf auth login`) or a local folder holding the checkpoint. "
            "Default from $NAPARI_SAM3_MODEL."
        )
        model_form.addRow("Model", self.model_edit)
        row = QHBoxLayout()
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA if available, else Apple MPS, else CPU.")
        self.load_btn = QPushButton("Load model")
        self.load_btn.setToolTip("Optional: the model also loads on the first run.")
        self.load_btn.clicked.connect(self.load_model)
        row.addWidget(self.device_combo)
        row.addWidget(self.load_btn)
        model_form.addRow("Device", row)
        self.adapter_edit = QLineEdit()
        self.adapter_edit.setPlaceholderText("none (the base model)")
        self.adapter_edit.setToolTip(
            "A SAM3 adapter file (napari-sam3 adapt ... --out FILE): the next Segment and Count "
            "runs use it. Empty: the base model."
        )
        model_form.addRow("Adapter", self.adapter_edit)
        self.model_status = QLabel("Model not loaded (loads on first run).")
        self.model_status.setWordWrap(True)
        model_form.addRow(self.model_status)
        layout.addLayout(model_form)

        self.tabs = QTabWidget()
        self.segment_tab = SegmentTab(self.viewer, self.holder, self.runner, self.model_settings)
        self.tabs.addTab(self.segment_tab, "Segment")
        self.count_tab = _make_count_tab(self)
        self.tabs.addTab(self.count_tab, "Count")
        layout.addWidget(self.tabs)
        self.export_box = ExportBox(self.viewer, self._last_result_layer)
        layout.addWidget(self.export_box)
        self._fitted = False
        narrow(self)
        self.model_edit.editingFinished.connect(self._update_model_status)
        self.adapter_edit.editingFinished.connect(self._on_adapter_changed)
        self.device_combo.currentIndexChanged.connect(self._update_model_status)
        self.runner.listeners.append(lambda job: self._update_model_status())
        # Clean up even when napari deletes the dock without a close event.
        self.destroyed.connect(self.runner.close)

    # ------------------------------------------------------------------ model
    def model_settings(self) -> tuple[str, str]:
        return self.model_edit.text().strip() or default_model(), self.device_combo.currentText()

    def _on_adapter_changed(self) -> None:
        """The adapter file the next runs put on the engine (checked when a run starts)."""
        self.holder.adapter = self.adapter_edit.text().strip() or None

    def _update_model_status(self, *args) -> None:
        source, device = self.model_settings()
        if self.holder.is_loaded(source, device):
            engine = self.holder.engine
            self.model_status.setText(
                f"Loaded: {getattr(engine, 'source', source)} on {getattr(engine, 'device', device)}"
            )
        elif self.holder.failed and self.holder.failed[:2] == (source, device):
            # the reason stays beside the Model field, not only at the bottom of a tab
            reason = self.holder.failed[2].split(". ")[0].rstrip(".")
            self.model_status.setText(f"Model not loaded: {reason}. Fix it and run again.")
        else:
            self.model_status.setText("Model not loaded (loads on first run).")

    def load_model(self) -> Job:
        """Load the model now (in a worker); errors become notifications naming the fix."""
        source, device = self.model_settings()
        holder = self.holder

        def make():
            return (yield from holder.iter_engine(source, device))

        def on_error(exc):
            notify_error(exc)
            self._update_model_status()

        job = Job(
            make=make,
            desc="SAM3: loading model",
            group="load",
            on_result=lambda engine: self._on_model_loaded(),
            on_error=on_error,
            on_progress=lambda p: self.model_status.setText(p.message),
        )
        return self.runner.submit(job, replace_running=False)

    def _on_model_loaded(self) -> None:
        self._update_model_status()
        for tab in (self.segment_tab, self.count_tab):  # a model error shown there is fixed now
            tab.clear_error("Model loaded: run again.")

    @property
    def idle(self) -> bool:
        """Nothing running or waiting in any tab (tests and scripts wait on this)."""
        tabs_idle = all(getattr(t, "idle", True) for t in (self.segment_tab, self.count_tab))
        return self.runner.idle and tabs_idle

    def _last_result_layer(self):
        res = self.segment_tab.session.last_text
        return res.layer if res is not None else None

    def sizeHint(self):  # noqa: N802 - Qt name
        # the dock opens this wide: room for the image beside it in napari's default window
        hint = super().sizeHint()
        body = self.findChild(QScrollArea).widget()
        hint.setWidth(max(body.minimumSizeHint().width() + 16, 380))  # + the vertical scroll bar
        return hint

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if not self._fitted:  # the dock narrowed the canvas: refit the image once it has its size
            self._fitted = True
            from qtpy.QtCore import QTimer

            # the canvas gets its narrower size a few event-loop turns after the dock appears
            for delay_ms in (0, 150, 400):
                QTimer.singleShot(delay_ms, self._refit)

    def _refit(self) -> None:
        try:
            self.viewer.reset_view()
        except RuntimeError:  # viewer closed meanwhile
            pass

    # ------------------------------------------------------------------ lifetime
    def cleanup(self) -> None:
        """Cancel runs and disconnect from the viewer; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        self.segment_tab.disconnect_viewer()
        self.count_tab.disconnect_viewer()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.cleanup()
        super().closeEvent(event)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt name
        # napari's remove_dock_widget (the dock's close button) only un-parents the widget: treat
        # losing the dock as closing, so no result lands after the user closed the widget.
        from qtpy.QtCore import QEvent

        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._had_parent:
                self.cleanup()
            self._had_parent = self.parent() is not None
        super().changeEvent(event)


def narrow(widget: QWidget) -> None:
    """Let the dock be narrow: long combo entries must not widen it (in napari's default window a
    500 px dock left the image a 90 px strip); a combo shows the start of its entry instead."""
    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)


def _make_count_tab(widget: Sam3Widget) -> QWidget:
    return CountTab(widget.viewer, widget.holder, widget.runner, widget.model_settings)
