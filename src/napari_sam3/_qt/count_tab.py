"""The "Count" tab: count objects on the current plane (nucleus network, classical or SAM3), show and export.

Wiring only: the tab reads its controls into a `CountRequest` and calls
`_napari.count_session.CountSession`, which runs the count, adds the layers and keeps the last
result; the tab shows the summary and the table it reports, and asks where to save the CSV.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
)

from napari_sam3._napari.count_results import PreparedCount
from napari_sam3._napari.count_session import METHODS, CountRequest, CountSession
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.train_session import TrainSession, default_network_dir
from napari_sam3._qt.tab_base import PlaneTab, save_to
from napari_sam3._qt.table_model import DataFrameModel
from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, next_turn, notify_error
from napari_sam3.core.defaults import MAX_DIAMETER
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing


class CountTab(PlaneTab):
    """Count objects on the current plane of an image layer."""

    image_tooltip = "The image to count; nD stacks use the slice shown now."

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(viewer, holder, runner, model_settings, parent)
        self.session = CountSession(viewer, holder, self.submit, next_turn)
        self.train_session = TrainSession(viewer, self.submit)
        self.train_session.events.trained.connect(self._on_trained)
        self.adder = self.session.adder
        self._build()
        self.session.events.result.connect(self._on_result)
        self.session.events.status.connect(self._on_session_status)
        self.watch_viewer()

    @property
    def last(self) -> PreparedCount | None:
        """The last count (read-only view of the session's)."""
        return self.session.last

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.add_image_choice(form)
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.method_combo.setToolTip(
            "learned: the nucleus network shipped with the plugin, no download, seconds "
            "(the default; fluorescent nuclei).\n"
            "classical: threshold + watershed split, no network, seconds.\n"
            "sam3: SAM3 with the concept below (and exemplar boxes), tiled at the object size."
        )
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        form.addRow("Method", self.method_combo)
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(0, MAX_DIAMETER)  # what the request accepts
        self.diameter_spin.setDecimals(1)
        self.diameter_spin.setSuffix(" px")
        self.diameter_spin.setSpecialValueText("auto (estimated)")
        self.diameter_spin.setToolTip("Typical object diameter in pixels; 0 = estimate it.")
        form.addRow("Diameter", self.diameter_spin)
        self.concepts_edit = QLineEdit("nucleus")
        self.concepts_edit.setToolTip("SAM3 concepts, comma-separated; each gets its own count.")
        form.addRow("Concepts", self.concepts_edit)
        self.exemplar_check = QCheckBox("Use the boxes layer as exemplars")
        form.addRow(self.exemplar_check)
        self.all_slices_check = QCheckBox("All slices")
        self.all_slices_check.setToolTip(
            "nD stacks: count every slice (each z / t) instead of the one shown; one Labels layer\n"
            "for the whole stack and a per-slice count. Exemplar boxes come from the slice shown."
        )
        self.image_combo.currentIndexChanged.connect(self._update_all_slices)
        form.addRow(self.all_slices_check)
        outer.addLayout(form)
        self.count_btn = self.add_run_row(outer, "Count", self.run_count)
        self.count_label = QLabel("No count yet.")
        self.count_label.setWordWrap(True)
        font = self.count_label.font()
        font.setPointSize(font.pointSize() + 2)
        self.count_label.setFont(font)
        outer.addWidget(self.count_label)
        self.table_model = DataFrameModel()
        self.table_view = QTableView()
        self.table_view.setModel(self.table_model)
        self.table_view.setMinimumHeight(160)
        # the table's own "label" column names each row: no second row-number column
        self.table_view.verticalHeader().setVisible(False)
        self.table_view.horizontalHeader().setResizeContentsPrecision(200)  # big tables: sample
        outer.addWidget(self.table_view)
        self.export_btn = QPushButton("Export table as CSV...")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_csv())
        outer.addWidget(self.export_btn)
        self._build_train(outer)
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)
        self._on_method_changed()
        self._update_all_slices()

    # ------------------------------------------------------------------ choices
    def refresh_layer_choices(self, event=None) -> None:
        super().refresh_layer_choices(event)
        if hasattr(self, "all_slices_check"):
            self._update_all_slices()

    def _update_all_slices(self, *args) -> None:
        """Enable 'All slices' only for images with non-displayed (leading) axes."""
        image = self.image_layer()
        self.all_slices_check.setEnabled(image is not None and int(image.ndim) > 2)

    def all_slices(self, image) -> bool:
        return (
            self.all_slices_check.isEnabled()
            and self.all_slices_check.isChecked()
            and image is not None
            and int(image.ndim) > 2
        )

    def _on_method_changed(self, *args) -> None:
        sam3 = self.method_combo.currentText() == "sam3" and not self.method_combo.currentData()
        self.concepts_edit.setEnabled(sam3)
        self.exemplar_check.setEnabled(sam3)

    @property
    def idle(self) -> bool:
        return self.adder.idle  # counts run on the shared runner, which the widget checks

    def disconnect_viewer(self) -> None:
        super().disconnect_viewer()
        self.session.close()

    # ------------------------------------------------------------------ run
    def run_count(self) -> Job | None:
        image = self.image_layer()
        ref = self.ref_or_notify(image)
        if ref is None:
            return None
        pre = Preprocessing(channel=self.images.channel())
        try:  # the request checks itself (core.requests): a bad option is told, nothing runs
            request = self.request(image)
            return self.session.run_count(PlaneRun(image, ref, pre, self.model_settings()), request)
        except Sam3Error as exc:
            notify_error(exc)
            return None

    def request(self, image=None) -> CountRequest:
        """The controls as a `CountRequest` (`Sam3Error` for a bad one)."""
        net = self.method_combo.currentData()
        return CountRequest(
            method="learned" if net else self.method_combo.currentText(),
            net=net,
            diameter=self.diameter_spin.value() or None,
            concepts=self.concepts_edit.text(),
            use_boxes=self.exemplar_check.isChecked(),
            all_slices=self.all_slices(image),
        )

    def _on_result(self, event) -> None:
        """The summary and the table of a finished count (its layers are the session's)."""
        self.count_label.setText("\n".join(event.lines))
        self.table_model.set_frame(event.value.view)
        self.table_view.resizeColumnsToContents()  # whole header names, not "are..."
        self.export_btn.setEnabled(True)

    def _on_session_status(self, event) -> None:
        self.set_status(event.value)

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the last count's table as CSV (asks for a file when ``path`` is None)."""
        if self.last is None:
            return None
        dialog = ("Export counts", "counts.csv", "CSV (*.csv)")
        return save_to(self, path, dialog, self.session.write_csv)

    # ------------------------------------------------------------------ train on labels
    def _build_train(self, outer) -> None:
        self.train_btn = QPushButton("Train on these labels...")
        self.train_btn.setToolTip(
            "Fine-tune the nucleus network on the Labels layers selected in the layer list (a\n"
            "corrected count, a reviewed SAM3 result or hand-painted labels) and their images.\n"
            "Part of the labels is held out to measure F1 before -> after; minutes on the CPU.\n"
            "The new network is added to Method and selected when it is better."
        )
        self.train_btn.clicked.connect(lambda: self.train_on_labels())
        outer.addLayout(self._build_train_steps())
        outer.addWidget(self.train_btn)
        self.train_label = QLabel("")
        self.train_label.setWordWrap(True)
        outer.addWidget(self.train_label)

    def _build_train_steps(self) -> QFormLayout:
        from napari_sam3.core.defaults import FINETUNE_STEPS

        row = QFormLayout()
        self.train_steps_spin = QSpinBox()
        self.train_steps_spin.setRange(1, 100_000)
        self.train_steps_spin.setSingleStep(50)
        self.train_steps_spin.setValue(FINETUNE_STEPS)
        self.train_steps_spin.valueChanged.connect(self._show_train_time)
        row.addRow("Training steps", self.train_steps_spin)
        self._show_train_time()
        return row

    def _show_train_time(self, *args) -> None:
        from napari_sam3.core.learned.finetune import time_text

        steps = self.train_steps_spin.value()
        self.train_steps_spin.setToolTip(
            f"Fine-tuning steps of 8 crops each: {steps} steps take {time_text(steps)} on 2 CPU\n"
            "cores, plus scoring the held-out labels. More steps learn more from many labels."
        )
        self.train_steps_spin.setSuffix(f"  ({time_text(steps)})")

    def _chosen_labels(self) -> list:
        import napari

        chosen = [ly for ly in self.viewer.layers.selection if isinstance(ly, napari.layers.Labels)]
        if not chosen and self.last is not None and self.last.labels_layer in self.viewer.layers:
            chosen = [self.last.labels_layer]
        return chosen

    def train_on_labels(self, layers=None, path: str | None = None, steps: int | None = None):
        """Fine-tune on ``layers`` (default: the selected Labels layers, else the last count) for
        ``steps`` (default: the Training steps box); asks where to save when ``path`` is None.
        Returns the job, or None."""
        layers = self._chosen_labels() if layers is None else list(layers)
        if not layers:
            notify_error(
                Sam3Error("Select the corrected Labels layer(s) in the layer list, then train.")
            )
            return None
        if path is None:
            folder = default_network_dir()
            folder.mkdir(parents=True, exist_ok=True)
            k = 1
            while (folder / f"my_nuclei_{k}.safetensors").exists():
                k += 1
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Save the new network",
                str(folder / f"my_nuclei_{k}.safetensors"),
                "Nucleus network (*.safetensors)",
            )
            if not path:
                return None
        if steps is None:
            steps = self.train_steps_spin.value()
        try:
            return self.train_session.run(layers, path, steps=steps)
        except Sam3Error as exc:
            notify_error(exc)
            return None

    def _on_trained(self, event) -> None:
        """The new network joins Method (a worse one too, for the record) and is selected only
        when it beats its base on the held-out labels."""
        from pathlib import Path

        result = event.value
        self.train_label.setText("\n".join(event.lines))
        path = str(result.path)
        i = self.method_combo.findData(path)
        if i < 0:
            self.method_combo.addItem(f"learned: {Path(path).stem}", path)
            i = self.method_combo.count() - 1
        if result.better:
            self.method_combo.setCurrentIndex(i)
        self.set_status(f"Trained {result.steps} steps in {result.seconds:.0f} s.")
