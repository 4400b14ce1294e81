"""The "Count" tab: count objects on the current plane (classical default, or SAM3), show and export.

Wiring only: `core.counting.iter_count` runs in a worker; the result becomes a Labels layer (objects,
with the measurements as ``features``) and a Points layer (centroids), both placed on the plane the
count ran on, plus a per-concept count and a table view with CSV export.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from . import _layers as L
from . import _prompt_layers as P
from ._worker import EngineHolder, Job, JobRunner, error_message
from .core.errors import Sam3Error
from .core.progress import Progress

METHODS = ("classical", "sam3")


class DataFrameModel(QAbstractTableModel):
    """A read-only Qt view of a pandas DataFrame (cells are formatted lazily, so big tables are cheap)."""

    def __init__(self, df: pd.DataFrame | None = None):
        super().__init__()
        self.df = df if df is not None else pd.DataFrame()

    def set_frame(self, df: pd.DataFrame) -> None:
        self.beginResetModel()
        self.df = df
        self.endResetModel()

    def rowCount(self, parent=None):  # noqa: N802 - Qt name
        return 0 if parent is not None and parent.isValid() else len(self.df)

    def columnCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(self.df.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        value = self.df.iat[index.row(), index.column()]
        if isinstance(value, (float, np.floating)):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.df.columns[section])
        return str(section + 1)


def prepare_count(result, ref: L.PlaneRef, image_name: str) -> dict:
    """Layer data for a `CountResult` on ``ref``'s plane (runs in the worker)."""
    table = result.table.copy()
    table.insert(0, "index", table["label"].to_numpy())
    if ref.index:
        table["slice"] = [",".join(map(str, ref.index))] * len(table)
    labels = np.asarray(result.labels).reshape(ref.label_shape())
    lead = np.zeros((len(table), len(ref.index)))
    yx = table[["centroid_y", "centroid_x"]].to_numpy(dtype=float).reshape(-1, 2)
    points = np.concatenate([lead, yx], axis=1)  # in the placed layer's data coordinates
    return {"result": result, "labels": labels, "table": table, "points": points}


class CountTab(QWidget):
    """Count objects on the current plane of an image layer."""

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(parent)
        self.viewer = viewer
        self.holder = holder
        self.runner = runner
        self.model_settings = model_settings
        self.last = None  # dict from prepare_count + layers
        self._watched: list = []
        self._build()
        ev = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(ev, name).connect(self.refresh_layer_choices)
            self._watched.append((getattr(ev, name), self.refresh_layer_choices))
        self.refresh_layer_choices()

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Image", self.image_combo)
        self.channel_combo = QComboBox()
        form.addRow("Channel", self.channel_combo)
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.method_combo.setToolTip(
            "classical: threshold + watershed split, no model, seconds (the default).\n"
            "sam3: SAM3 with the concept below (and exemplar boxes), tiled at the object size."
        )
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        form.addRow("Method", self.method_combo)
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(0, 10_000)
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
        outer.addLayout(form)
        row = QHBoxLayout()
        self.count_btn = QPushButton("Count")
        self.count_btn.clicked.connect(self.run_count)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.count_btn)
        row.addWidget(self.cancel_btn)
        outer.addLayout(row)
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
        outer.addWidget(self.table_view)
        self.export_btn = QPushButton("Export table as CSV...")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_csv())
        outer.addWidget(self.export_btn)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)
        self._on_method_changed()

    # ------------------------------------------------------------------ choices
    def refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image

        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image)]
        current = self.image_combo.currentText()
        if [self.image_combo.itemText(i) for i in range(self.image_combo.count())] != names:
            self.image_combo.blockSignals(True)
            self.image_combo.clear()
            self.image_combo.addItems(names)
            if current in names:
                self.image_combo.setCurrentText(current)
            self.image_combo.blockSignals(False)
        self._on_image_changed()

    def _on_image_changed(self, *args) -> None:
        layer = self.image_layer()
        options = ["RGB", "Red", "Green", "Blue"] if layer is not None and layer.rgb else ["Gray"]
        if [self.channel_combo.itemText(i) for i in range(self.channel_combo.count())] != options:
            self.channel_combo.clear()
            self.channel_combo.addItems(options)
        self.channel_combo.setEnabled(len(options) > 1)

    def _on_method_changed(self, *args) -> None:
        sam3 = self.method_combo.currentText() == "sam3"
        self.concepts_edit.setEnabled(sam3)
        self.exemplar_check.setEnabled(sam3)

    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def idle(self) -> bool:
        return True  # counts run on the shared runner, which the widget checks

    def disconnect_viewer(self) -> None:
        for emitter, cb in self._watched:
            try:
                emitter.disconnect(cb)
            except Exception:  # noqa: BLE001
                pass
        self._watched = []

    # ------------------------------------------------------------------ run
    def run_count(self) -> Job | None:
        image = self.image_layer()
        try:
            if image is None:
                raise Sam3Error("Add an image layer first.")
            dims = self.viewer.dims
            ref = L.plane_ref(image, dims.point, dims.displayed, dims.ndisplay)
        except Sam3Error as exc:
            _notify_error(exc)
            return None
        method = self.method_combo.currentText()
        diameter = self.diameter_spin.value() or None
        concepts = self.concepts_edit.text()
        channel = None
        if self.channel_combo.count() > 1 and self.channel_combo.currentIndex() > 0:
            channel = self.channel_combo.currentIndex() - 1
        exemplars = exemplar_labels = None
        if method == "sam3" and self.exemplar_check.isChecked():
            boxes_layer = P.find_prompt_layer(self.viewer, "boxes", image)
            if boxes_layer is not None:
                boxes, labels = L.boxes_in_plane(boxes_layer.data, P.signs_of(boxes_layer), ref)
                if len(boxes):
                    exemplars, exemplar_labels = boxes, labels
        scale = tuple(float(s) for s in ref.geometry["scale"][-2:])
        data = image.data
        source, device = self.model_settings()
        holder = self.holder
        name = image.name

        def make():
            from .core.counting import iter_count

            engine = None
            if method == "sam3":
                engine = yield from holder.iter_engine(source, device)
            yield Progress("Reading the image plane...")
            plane = L.read_plane(data, ref)
            result = yield from iter_count(
                plane,
                method,
                diameter=diameter,
                prompt=concepts if method == "sam3" else None,
                exemplars=exemplars,
                exemplar_labels=exemplar_labels,
                engine=engine,
                scale=scale,
                channel=channel,
                rgb=ref.rgb,
            )
            yield Progress(f"Counted {result.count} objects; building layers...")
            return prepare_count(result, ref, name)

        job = Job(
            make=make,
            desc=f"SAM3 count ({method})",
            group="count",
            on_result=lambda out: self._on_result(out, ref, image, method),
            on_error=self._on_error,
            on_progress=lambda p: self._set_status(p.message),
            on_done=lambda state: self._set_status("Cancelled.") if state == "aborted" else None,
        )
        self._set_status(f"Counting ({method}) on {ref.layer_name}{ref.slice_text()}...")
        return self.runner.submit(job, replace_running=True)

    def _on_result(self, out: dict, ref: L.PlaneRef, image, method: str) -> None:
        if image not in self.viewer.layers:
            _notify_info(
                f"The image '{ref.layer_name}' was removed during the count; result dropped."
            )
            return
        result, table = out["result"], out["table"]
        geometry = L.placed_geometry(ref)
        base = f"{ref.layer_name} count ({method}){ref.slice_text()}"
        labels_layer = self.viewer.add_labels(out["labels"], name=base, features=table, **geometry)
        size = max(3.0, 0.25 * (result.diameter if np.isfinite(result.diameter) else 10.0))
        points_layer = self.viewer.add_points(
            out["points"],
            name=f"{base} centroids",
            features=table,
            size=size,
            face_color="yellow",
            border_color="black",
            **geometry,
        )
        self.last = {**out, "labels_layer": labels_layer, "points_layer": points_layer}
        lines = [f"Total: {result.count} objects"]
        if method == "sam3" or len(result.counts) > 1:
            lines += [f"  {k}: {v}" for k, v in result.counts.items()]
        if np.isfinite(result.diameter):
            lines.append(f"Diameter used: {result.diameter:.1f} px")
        self.count_label.setText("\n".join(lines))
        self.table_model.set_frame(table)
        self.export_btn.setEnabled(True)
        for warning in result.warnings:
            _notify_warning(warning)
        self._set_status("; ".join(result.warnings) if result.warnings else "Done.")

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the last count's table as CSV (asks for a file when ``path`` is None)."""
        if self.last is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export counts", "counts.csv", "CSV (*.csv)"
            )
            if not path:
                return None
        try:
            self.last["result"].to_csv(path)
        except (OSError, Sam3Error) as exc:
            _notify_error(exc)
            return None
        self._set_status(f"Table written to {path}")
        return str(path)

    def cancel(self) -> None:
        self.runner.cancel_all()

    def _on_error(self, exc: BaseException) -> None:
        if type(exc).__name__ == "Cancelled":
            self._set_status("Cancelled.")
            return
        self._set_status(error_message(exc))
        _notify_error(exc)

    def _set_status(self, text: str) -> None:
        try:
            self.status_label.setText(text)
        except RuntimeError:
            pass


def _notify_error(exc: BaseException) -> None:
    from napari.utils.notifications import show_error

    show_error(error_message(exc))


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
