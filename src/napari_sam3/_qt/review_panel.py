"""The object review panel: a table of the active result layer's objects, synced with its selection.

All decisions go through `_napari.review_session.ReviewSession` (Qt-free); this widget only shows its
table, forwards buttons and row clicks, and follows the viewer's active Labels layer. Keys on
the layer itself: A accept, R reject, S needs edit, N next.
"""

from __future__ import annotations

import weakref

from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_sam3._napari.identity import layer_uid, unwrap
from napari_sam3._napari.review_session import ReviewSession
from napari_sam3._qt.table_model import DataFrameModel

# one panel per viewer (plugin proxies differ: keyed by the real viewer object, held weakly)
_panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ReviewPanel(QWidget):
    """Review the objects of the viewer's active Labels layer (one with an objects table)."""

    def __init__(self, viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session: ReviewSession | None = None
        self._sessions: dict[str, ReviewSession] = {}  # by layer uid (`_napari.identity`)
        self._syncing = False
        outer = QVBoxLayout(self)
        self.title = QLabel("Select a result layer to review its objects.")
        outer.addWidget(self.title)
        self.model = DataFrameModel()
        self.view = QTableView()
        self.view.verticalHeader().setVisible(False)  # the label column is the row's name
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.clicked.connect(self._on_row_clicked)
        outer.addWidget(self.view)
        row = QHBoxLayout()
        self.buttons = {}
        for text, method in (
            ("Accept (A)", "accept"),
            ("Reject (R)", "reject"),
            ("Needs edit (S)", "needs_edit"),
            ("Next (N)", "next"),
        ):
            btn = QPushButton(text)
            btn.clicked.connect(lambda _=False, m=method: self._call(m))
            row.addWidget(btn)
            self.buttons[method] = btn
        outer.addLayout(row)
        bulk = QHBoxLayout()
        self.score_spin = QDoubleSpinBox()
        self.score_spin.setRange(0.0, 1.0)
        self.score_spin.setSingleStep(0.05)
        self.score_spin.setValue(0.8)
        self.accept_above_btn = QPushButton("Accept all with score ≥")
        self.accept_above_btn.clicked.connect(self._accept_above)
        self.hide_check = QCheckBox("Hide rejected")
        self.hide_check.toggled.connect(self._hide)
        bulk.addWidget(self.accept_above_btn)
        bulk.addWidget(self.score_spin)
        bulk.addWidget(self.hide_check)
        outer.addLayout(bulk)
        viewer.layers.selection.events.active.connect(self._on_active)
        viewer.layers.events.removed.connect(self._forget_removed)
        self._on_active()

    # ------------------------------------------------------------------ layer following
    def _on_active(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is None or not hasattr(layer, "selected_label") or not _has_objects(layer):
            return
        self.attach(layer)

    def _forget_removed(self, event=None) -> None:
        """Drop the sessions of layers that left the viewer (their decisions stay in features)."""
        present = {layer_uid(ly) for ly in self.viewer.layers}
        for key in [k for k in self._sessions if k not in present]:
            del self._sessions[key]
            if self.session is not None and layer_uid(self.session.layer) == key:
                self.session = None

    def attach(self, layer) -> ReviewSession:
        """Review ``layer`` (one session per layer while it is in the viewer)."""
        layer = unwrap(layer)
        key = layer_uid(layer)
        session = self._sessions.get(key)
        if session is None:
            session = ReviewSession(layer)
            session.bind_keys()
            session.listeners.append(self.refresh)
            layer.events.selected_label.connect(self._on_selected_label)
            self._sessions[key] = session
        self.session = session
        self.hide_check.setChecked(session.hiding)
        self.refresh()
        return session

    def refresh(self) -> None:
        if self.session is None:
            return
        counts = self.session.counts()
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        self.title.setText(f"{self.session.layer.name}: {summary}")
        self.model.set_frame(self.session.table())
        self._select_row(self.session.selected)

    def _select_row(self, label: int) -> None:
        table = self.model.df
        if "label" not in table or self._syncing:
            return
        rows = table.index[table["label"] == label].tolist()
        self._syncing = True
        try:
            if rows:
                self.view.selectRow(rows[0])
                self.view.scrollTo(self.model.index(rows[0], 0))
            else:
                self.view.clearSelection()
        finally:
            self._syncing = False

    def _on_selected_label(self, event=None) -> None:
        if self.session is not None:
            self._select_row(self.session.selected)

    def _on_row_clicked(self, index) -> None:
        if self.session is None or self._syncing:
            return
        label = int(self.model.df["label"].iloc[index.row()])
        self.session.layer.selected_label = label

    # ------------------------------------------------------------------ actions
    def _call(self, method: str) -> None:
        if self.session is not None:
            getattr(self.session, method)()
            self._select_row(self.session.selected)

    def _accept_above(self) -> None:
        if self.session is not None:
            self.session.accept_above(self.score_spin.value())

    def _hide(self, checked: bool) -> None:
        if self.session is not None:
            self.session.hide_rejected(bool(checked))


def _has_objects(layer) -> bool:
    features = getattr(layer, "features", None)
    return (
        features is not None and len(features) > 0 and ("label" in features or "index" in features)
    )


def add_review_button(tab, layout) -> None:
    """A "Review objects…" button that docks the review panel (one per viewer)."""
    btn = QPushButton("Review objects…")
    btn.setToolTip("Accept / reject the objects of a result layer (keys A, R, S, N on the layer).")
    btn.clicked.connect(lambda: open_review_panel(tab.viewer))
    tab.review_btn = btn
    layout.addWidget(btn)


def open_review_panel(viewer) -> ReviewPanel:
    """The viewer's review panel, docked on first use."""
    key = unwrap(viewer)
    panel = _panels.get(key)
    if panel is None:
        panel = ReviewPanel(viewer)
        # a tab beside the SAM3 dock: stacked under it, both were too short to use
        viewer.window.add_dock_widget(panel, name="SAM3 review", area="right", tabify=True)
        _panels[key] = panel
        panel.destroyed.connect(lambda *_: _panels.pop(key, None))
    return panel


__all__ = ["ReviewPanel", "add_review_button", "open_review_panel"]
