"""Reviewing a result layer's objects, Qt-free: decisions in ``layer.features["status"]``.

    review = ReviewSession(labels_layer)     # adds the status column ("unreviewed")
    review.accept()                          # the layer's selected label; then the next one
    review.reject(7); review.needs_edit(3)
    review.accept_above(0.8)                 # unreviewed objects scoring >= 0.8
    review.hide_rejected(True)               # rejected objects drawn transparent
    review.bind_keys()                       # A accept, R reject, S needs edit, N next (on the layer)
    data, table = review.export_arrays()     # rejected objects dropped: what every export writes

A rejected object's pixels leave the layer's data at once (kept aside in ``layer.metadata`` and put
back, where still empty, when the decision changes). So the layer holds only what may leave the
program, and ANY writer is right: File > Save preselects napari's builtin Labels writer, which
writes ``layer.data`` as it is, and knows nothing of review decisions.

The rules live in `core.results.review`; this class applies them to one napari Labels layer and
tells listeners (the Qt panel) when something changed. Decisions are kept in ``features``, so
they travel with the layer (copy, save, re-filter via `carry_over`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from napari_sam3.core.results.review import (
    ACCEPTED,
    NEEDS_EDIT,
    REJECTED,
    STATUS_COLUMN,
    accept_above,
    carry_decisions,
    drop_rejected,
    next_to_review,
    rejected_labels,
    set_status,
    with_status,
)

KEYS = {"a": ACCEPTED, "r": REJECTED, "s": NEEDS_EDIT}
NEXT_KEY = "n"
REVIEW_COLUMNS = ("label", "prompt", "score", STATUS_COLUMN)


STASH = "sam3_rejected"  # layer.metadata key: label -> flat pixel indices of a rejected object


def carry_over(layer, old_features: pd.DataFrame) -> None:
    """After a re-filter replaced ``layer.features``: bring back the decisions of ``old_features``."""
    layer.features = carry_decisions(old_features, layer.features)
    apply_rejections(layer, fresh=True)


def apply_rejections(layer, fresh: bool = False) -> None:
    """Keep ``layer.data`` free of rejected objects: take their pixels out (aside in metadata) and
    put back those of objects no longer rejected, where the pixels are still empty.

    ``fresh``: the data was just rewritten (a re-filter), so what was set aside is forgotten.
    Writes go straight to the array (not the undo history: Ctrl+Z must not bring back a rejected
    object behind its decision).
    """
    if "label" not in layer.features.columns or not isinstance(layer.data, np.ndarray):
        return  # a lazy (dask / zarr) layer is not written to; exports still drop rejected ids
    stash = {} if fresh else dict(layer.metadata.get(STASH, {}))
    rejected = {int(k) for k in rejected_labels(layer.features)}
    flat = layer.data.reshape(-1)
    changed = False
    for label in list(stash):
        if label not in rejected:
            idx = stash.pop(label)
            idx = idx[flat[idx] == 0]  # never over a pixel painted since
            flat[idx] = label
            changed = True
    for label in rejected - set(stash):
        idx = np.flatnonzero(flat == label)
        stash[label] = idx
        flat[idx] = 0
        changed = changed or idx.size > 0
    layer.metadata[STASH] = stash
    if changed:
        layer.refresh()


class ReviewSession:
    """Decisions on the objects of one Labels layer; see the module docstring."""

    def __init__(self, layer, *, advance: bool = True) -> None:
        self.layer = layer
        self.advance = advance  # after a decision, select the next object to review
        self.listeners: list[Callable[[], None]] = []
        self._hiding = False
        self._colormap = None
        if "label" not in layer.features and "index" in layer.features:
            features = layer.features.copy()
            features["label"] = features["index"]
            layer.features = features
        self._write(with_status(self._features()))

    # ------------------------------------------------------------------ state
    def _features(self) -> pd.DataFrame:
        return self.layer.features

    def _write(self, table: pd.DataFrame) -> None:
        self.layer.features = table
        apply_rejections(self.layer)
        if self._hiding:
            self._apply_hiding()
        for listener in list(self.listeners):
            listener()

    @property
    def hiding(self) -> bool:
        """Whether rejected objects are drawn transparent (`hide_rejected`)."""
        return self._hiding

    @property
    def selected(self) -> int:
        return int(self.layer.selected_label)

    def status_of(self, label: int) -> str:
        table = self._features()
        rows = table[table["label"] == int(label)]
        return str(rows[STATUS_COLUMN].iloc[0]) if len(rows) else ""

    def table(self) -> pd.DataFrame:
        """The objects with score and status, best score first (what the panel lists)."""
        table = self._features()
        cols = [c for c in REVIEW_COLUMNS if c in table]
        out = table[cols]
        if "score" in out:
            out = out.sort_values("score", ascending=False, kind="stable")
        return out.reset_index(drop=True)

    def counts(self) -> dict[str, int]:
        return self._features()[STATUS_COLUMN].value_counts().to_dict()

    # ------------------------------------------------------------------ decisions
    def decide(self, status: str, label: int | None = None) -> int | None:
        """Give ``label`` (default: the selected one) ``status``; returns the label selected next."""
        label = self.selected if label is None else int(label)
        self._write(set_status(self._features(), label, status))
        if self.advance:
            return self.next(current=label)
        return label

    def accept(self, label: int | None = None) -> int | None:
        return self.decide(ACCEPTED, label)

    def reject(self, label: int | None = None) -> int | None:
        return self.decide(REJECTED, label)

    def needs_edit(self, label: int | None = None) -> int | None:
        return self.decide(NEEDS_EDIT, label)

    def accept_above(self, min_score: float) -> int:
        """Accept the unreviewed objects scoring >= ``min_score``; returns how many were accepted."""
        before = int((self._features()[STATUS_COLUMN] == ACCEPTED).sum())
        self._write(accept_above(self._features(), min_score))
        return int((self._features()[STATUS_COLUMN] == ACCEPTED).sum()) - before

    def next(self, current: int | None = None) -> int | None:
        """Select the next object to review (None, selection unchanged, when all are decided)."""
        current = self.selected if current is None else current
        label = next_to_review(self._features(), current)
        if label is not None:
            self.layer.selected_label = int(label)
        return label

    # ------------------------------------------------------------------ display, keys, export
    def hide_rejected(self, hide: bool = True) -> None:
        """Draw rejected objects transparent (or restore the layer's own colours)."""
        if hide and not self._hiding:
            self._colormap = self.layer.colormap
        self._hiding = bool(hide)
        if hide:
            self._apply_hiding()
        elif self._colormap is not None:
            self.layer.colormap = self._colormap
            self._colormap = None

    def _apply_hiding(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        base = self._colormap or self.layer.colormap
        labels = self._features()["label"].to_numpy(dtype=np.int64)
        colors = base.map(labels) if len(labels) else np.zeros((0, 4), np.float32)
        mapping = {int(k): c for k, c in zip(labels, colors, strict=True)}
        for k in rejected_labels(self._features()):
            mapping[int(k)] = np.zeros(4, np.float32)
        mapping[0] = np.zeros(4, np.float32)
        mapping[None] = np.zeros(4, np.float32)
        self.layer.colormap = DirectLabelColormap(color_dict=mapping)

    def bind_keys(self) -> None:
        """A accept, R reject, S needs edit, N next: active while the layer is selected."""
        for key, status in KEYS.items():
            self.layer.bind_key(key, _decider(self, status), overwrite=True)
        self.layer.bind_key(NEXT_KEY, lambda _layer: self.next(), overwrite=True)

    def export_arrays(self) -> tuple[np.ndarray, pd.DataFrame]:
        """(label image, table) without the rejected objects: the input of every writer."""
        return drop_rejected(np.asarray(self.layer.data), self._features())


def _decider(review: ReviewSession, status: str):
    def decide(_layer):
        review.decide(status)

    decide.__doc__ = f"Mark the selected object {status} (napari-sam3 review)."
    return decide


__all__ = ["KEYS", "NEXT_KEY", "ReviewSession", "apply_rejections", "carry_over"]
