"""The "Count" tab: count objects on the current plane (classical default, or SAM3), show and export.

Wiring only: `core.counting.iter_count` runs in a worker; the result becomes a Labels layer (objects,
with the measurements as ``features``) and a Points layer (centroids), both placed on the plane the
count ran on, plus a per-concept count and a table view with CSV export.

With "All slices" on an nD stack, every slice (each position on the leading, non-displayed axes) is
counted in turn (progress per slice, Cancel between slices); the result is one stack-sized Labels
layer with ids unique across slices, centroids with the slice index as leading coordinate(s), a
per-slice summary and a table with a ``slice`` column.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
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

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari.count_results import (
    count_name,
    prepare_count,
    prepare_count_stack,
    slice_indices,
    stack_summary,
)
from napari_sam3._qt.tab_base import PlaneTab
from napari_sam3._qt.table_model import DataFrameModel
from napari_sam3._qt.worker import (
    EngineHolder,
    Job,
    JobRunner,
    next_turn,
    notify_error,
    notify_info,
    notify_warning,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.io.tables import write_table_csv

METHODS = ("classical", "sam3")


class CountTab(PlaneTab):
    """Count objects on the current plane of an image layer."""

    image_tooltip = "The image to count; nD stacks use the slice shown now."

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(viewer, holder, runner, model_settings, parent)
        self.last = None  # dict from prepare_count + layers
        self.adder = B.LayerAdder(
            viewer, next_turn
        )  # objects now, centroids on the next event-loop turn
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
        sam3 = self.method_combo.currentText() == "sam3"
        self.concepts_edit.setEnabled(sam3)
        self.exemplar_check.setEnabled(sam3)

    @property
    def idle(self) -> bool:
        return self.adder.idle  # counts run on the shared runner, which the widget checks

    def disconnect_viewer(self) -> None:
        super().disconnect_viewer()
        self.adder.close()

    # ------------------------------------------------------------------ run
    def run_count(self) -> Job | None:
        image = self.image_layer()
        ref = self.ref_or_notify(image)
        if ref is None:
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
            if exemplars is None:
                notify_info(
                    f"No boxes of '{image.name}' on this slice: counting with the concepts only "
                    "(draw boxes after Segment > Add click + box layers)."
                )
        scale = tuple(float(s) for s in ref.geometry["scale"][-2:])
        data = image.data
        source, device = self.model_settings()
        holder = self.holder
        if self.all_slices(image) and ref.index:
            options = {
                "diameter": diameter,
                "prompt": concepts if method == "sam3" else None,
                "exemplars": exemplars,
                "exemplar_labels": exemplar_labels,
                "scale": scale,
                "channel": channel,
                "rgb": ref.rgb,
            }
            return self._run_stack(image, ref, method, options, source, device)

        def make():
            from napari_sam3.core.counting.count import iter_count

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
            out = prepare_count(result, ref)
            geometry = L.placed_geometry(ref)
            out["layers"] = B.count_layers(out, count_name(ref, method), geometry, result.diameter)
            return out

        return self.submit(
            make,
            f"SAM3 count ({method})",
            "count",
            lambda out: self._on_result(out, ref, image, method, exemplar_labels),
            status=f"Counting ({method}) on {ref.layer_name}{ref.slice_text()}...",
        )

    def _run_stack(self, image, ref: L.PlaneRef, method: str, options: dict, source, device):
        """Count every slice of ``image`` in the worker (progress per slice, cancel between)."""
        data = image.data
        holder = self.holder
        indices = slice_indices(ref, data)

        def make():
            from napari_sam3.core.counting.count import iter_count

            engine = None
            if method == "sam3":
                engine = yield from holder.iter_engine(source, device)
            results = []
            n = len(indices)
            for k, idx in enumerate(indices):
                where = ",".join(map(str, idx))
                yield Progress(f"Counting slice {k + 1}/{n} [{where}]...", k, n)
                plane = L.read_plane(data, replace(ref, index=idx))
                result = yield from iter_count(plane, method, engine=engine, **options)
                results.append(result)
            yield Progress(f"Counted {n} slices; building layers...", n, n)
            out = prepare_count_stack(results, indices, ref)
            name = count_name(ref, method, all_slices=True)
            out["layers"] = B.count_layers(out, name, L.full_geometry(ref), out["diameter"])
            return out

        return self.submit(
            make,
            f"SAM3 count ({method}, all slices)",
            "count",
            lambda out: self._on_stack_result(out, ref, image, method),
            status=f"Counting ({method}) all {len(indices)} slices of {ref.layer_name}...",
        )

    def _on_stack_result(self, out: dict, ref: L.PlaneRef, image, method: str) -> None:
        lines = [stack_summary(out)]
        if method == "sam3" or len(out["counts"]) > 1:
            lines += [f"  {k}: {v}" for k, v in out["counts"].items()]
        if np.isfinite(out["diameter"]):
            lines.append(f"Diameter used (median): {out['diameter']:.1f} px")
        name = count_name(ref, method, all_slices=True)
        self._show(
            out,
            ref,
            image,
            name,
            L.full_geometry(ref),
            out["diameter"],
            lines,
            out["export"],
            out["warnings"],
        )

    def _on_result(self, out: dict, ref: L.PlaneRef, image, method: str, exemplar_labels=None):
        result = out["result"]
        lines = [f"Total: {result.count} objects"]
        if method == "sam3" or len(result.counts) > 1:
            lines += [f"  {k}: {v}" for k, v in result.counts.items()]
        if exemplar_labels is not None:
            n_pos = int(np.sum(np.asarray(exemplar_labels) == 1))
            n_neg = len(exemplar_labels) - n_pos
            lines.append(f"Exemplar boxes: {n_pos} positive, {n_neg} negative")
        if np.isfinite(result.diameter):
            lines.append(f"Diameter used: {result.diameter:.1f} px")
        name = count_name(ref, method)
        # "index" is napari's label-to-row key; the view shows it as "label"
        frame = out["table"].drop(columns="index")
        self._show(
            out,
            ref,
            image,
            name,
            L.placed_geometry(ref),
            result.diameter,
            lines,
            frame,
            result.warnings,
        )

    def _show(self, out, ref, image, name, geometry, diameter, lines, frame, warnings) -> None:
        """Labels + centroid layers, the summary and the table of a finished count."""
        if image not in self.viewer.layers:
            notify_info(
                f"The image '{ref.layer_name}' was removed during the count; result dropped."
            )
            return
        layers = out.pop("layers", None) or B.count_layers(out, name, geometry, diameter)
        labels_layer, points_layer = layers  # built in the worker; added one per event-loop turn
        self.adder.add(labels_layer, points_layer, when=lambda: image in self.viewer.layers)
        self.last = {**out, "labels_layer": labels_layer, "points_layer": points_layer}
        self.count_label.setText("\n".join(lines))
        self.table_model.set_frame(frame)
        self.table_view.resizeColumnsToContents()  # whole header names, not "are..."
        self.export_btn.setEnabled(True)
        for warning in warnings:
            notify_warning(warning)
        self.set_status("; ".join(warnings) if warnings else "Done.")

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
            table = self.last.get("export")
            if table is None:
                table = self.last["result"].table
            write_table_csv(path, table, overwrite=True)
        except (OSError, Sam3Error) as exc:
            notify_error(exc)
            return None
        self.set_status(f"Table written to {path}")
        return str(path)
