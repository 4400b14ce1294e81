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
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
)

from . import _layers as L
from . import _prompt_layers as P
from ._tab_base import PlaneTab
from ._worker import (
    EngineHolder,
    Job,
    JobRunner,
    notify_error,
    notify_info,
    notify_warning,
)
from .core.errors import Sam3Error
from .core.progress import Progress
from .io.tables import write_table_csv

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


class CountTab(PlaneTab):
    """Count objects on the current plane of an image layer."""

    image_tooltip = "The image to count; nD stacks use the slice shown now."

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(viewer, holder, runner, model_settings, parent)
        self.last = None  # dict from prepare_count + layers
        self._build()
        self.watch_viewer()

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.add_image_choice(form)
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
        outer.addWidget(self.table_view)
        self.export_btn = QPushButton("Export table as CSV...")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_csv())
        outer.addWidget(self.export_btn)
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)
        self._on_method_changed()

    # ------------------------------------------------------------------ choices
    def _on_method_changed(self, *args) -> None:
        sam3 = self.method_combo.currentText() == "sam3"
        self.concepts_edit.setEnabled(sam3)
        self.exemplar_check.setEnabled(sam3)

    @property
    def idle(self) -> bool:
        return True  # counts run on the shared runner, which the widget checks

    # ------------------------------------------------------------------ run
    def run_count(self) -> Job | None:
        image = self.image_layer()
        try:
            ref = self.current_ref(image)
        except Sam3Error as exc:
            notify_error(exc)
            return None
        method = self.method_combo.currentText()
        diameter = self.diameter_spin.value() or None
        concepts = self.concepts_edit.text()
        channel = self.images.channel()
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

        return self.submit(
            make,
            f"SAM3 count ({method})",
            "count",
            lambda out: self._on_result(out, ref, image, method),
            status=f"Counting ({method}) on {ref.layer_name}{ref.slice_text()}...",
        )

    def _on_result(self, out: dict, ref: L.PlaneRef, image, method: str) -> None:
        if image not in self.viewer.layers:
            notify_info(
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
        self.table_model.set_frame(
            table.drop(columns="index")
        )  # "index" is napari's label-to-row key, shown as "label"
        self.export_btn.setEnabled(True)
        for warning in result.warnings:
            notify_warning(warning)
        self.set_status("; ".join(result.warnings) if result.warnings else "Done.")

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
            # The save dialog has already asked before replacing an existing file.
            write_table_csv(path, self.last["result"].table, overwrite=True)
        except (OSError, Sam3Error) as exc:
            notify_error(exc)
            return None
        self.set_status(f"Table written to {path}")
        return str(path)
