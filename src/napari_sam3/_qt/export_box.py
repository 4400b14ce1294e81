"""The widget's Export row: the selected Labels layer -> labels TIFF + objects CSV (+ COCO, pairs).

napari's File > Save preselects its builtin Labels writer (int32 TIFF, no table); this button writes
what a result needs (see `_napari.export_layer`). Wiring only.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sam3._napari.export_layer import export_layer, export_paths
from napari_sam3._qt.worker import notify_error
from napari_sam3.core.errors import Sam3Error


class ExportBox(QWidget):
    """Export button, format choices and a line saying what was written."""

    def __init__(self, viewer, fallback_layer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.fallback_layer = fallback_layer  # callable -> the last result layer, or None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.export_btn = QPushButton("Export labels + table...")
        self.export_btn.setToolTip(
            "Write the selected Labels layer (or the last result) to a folder: <name>_labels.tif "
            "and <name>_objects.csv (one row per object, measured from the pixels as they are now, "
            "hand edits included); optionally COCO json and an image/mask training pair."
        )
        self.export_btn.clicked.connect(lambda: self.export())
        self.coco_check = QCheckBox("COCO")
        self.pairs_check = QCheckBox("Training pair")
        row.addWidget(self.export_btn)
        row.addWidget(self.coco_check)
        row.addWidget(self.pairs_check)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

    def layer(self):
        """The active Labels layer, else the last result."""
        from napari.layers import Labels

        from napari_sam3._napari.click_session import is_preview

        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and not is_preview(active):
            return active
        return self.fallback_layer()

    def formats(self) -> tuple[str, ...]:
        chosen = ["tiff"]
        if self.coco_check.isChecked():
            chosen.append("coco")
        if self.pairs_check.isChecked():
            chosen.append("pairs")
        return tuple(chosen)

    def export(self, folder: str | None = None, overwrite: bool | None = None) -> dict | None:
        """Export to ``folder`` (asks for one when None); asks before replacing files."""
        layer = self.layer()
        if layer is None:
            notify_error(Sam3Error("Select a Labels layer to export (or run SAM3 first)."))
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, f"Export '{layer.name}' to folder")
            if not folder:
                return None
        try:
            existing = [
                p for p in export_paths(layer, folder, self.formats()).values() if p.exists()
            ]
            if existing and overwrite is None:
                answer = QMessageBox.question(
                    self,
                    "Replace files?",
                    "Replace " + ", ".join(p.name for p in existing) + "?",
                )
                overwrite = answer == QMessageBox.StandardButton.Yes
                if not overwrite:
                    return None
            paths = export_layer(
                self.viewer, layer, folder, self.formats(), overwrite=bool(overwrite)
            )
        except (OSError, Sam3Error) as exc:
            notify_error(exc)
            return None
        self.status.setText(
            f"Exported '{layer.name}': " + ", ".join(p.name for p in paths.values())
        )
        return paths
