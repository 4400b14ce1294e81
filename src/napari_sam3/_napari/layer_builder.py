"""Result layers built in the worker, added on the main thread one per event-loop turn.

Adding a layer to napari stalls the main thread (vispy visual and shaders, layer overlays, the Qt
layer-controls widget: about 100 ms on a 2-core CPU with software OpenGL; see
``benchmarks/bench_stall.py``). The `napari.layers.Labels` / ``Points`` objects themselves (features
table, colormap, thumbnail: 10-80 ms) hold no Qt or vispy objects, so the worker builds them and the
main thread only appends. When a result has two layers, `LayerAdder` appends the second on the next
turn of the event loop, so the window repaints between the two stalls instead of freezing for both.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def labels_layer(data, kwargs: dict):
    """A napari ``Labels`` layer for ``viewer.add_labels(data, **kwargs)`` (worker-safe: no Qt)."""
    from napari.layers import Labels

    return Labels(data, **kwargs)


def points_layer(data, kwargs: dict):
    """A napari ``Points`` layer for ``viewer.add_points(data, **kwargs)`` (worker-safe: no Qt)."""
    from napari.layers import Points

    return Points(data, **kwargs)


def build_result_layers(prepared, ref, main: bool = True, hidden: bool = True):
    """Build the Segment result's ``layer`` (and ``hidden_layer``) of a `layers.PreparedResult`.

    Runs in the worker. The hidden layer gets its final name on the main thread, from the result
    layer's name after napari made it unique.
    """
    if main:
        prepared.layer = labels_layer(prepared.data, prepared.kwargs)
    if hidden and prepared.hidden is not None:
        kwargs = hidden_layer_kwargs(ref, prepared.kwargs["features"])
        prepared.hidden_layer = labels_layer(prepared.hidden, kwargs)
    return prepared


HIDDEN_KIND = "hidden"  # ``metadata["sam3"]["kind"]`` of a result's hidden-objects layer


def hidden_layer_kwargs(ref, features) -> dict:
    """``add_labels`` kwargs of a result's hidden-objects layer (known by its metadata kind)."""
    from napari_sam3._napari.layers import placed_geometry

    meta = {"sam3": {"kind": HIDDEN_KIND, "image_uid": ref.image_uid}}
    return {**placed_geometry(ref), "features": features, "metadata": meta}


def is_hidden_layer(layer) -> bool:
    meta = layer.metadata.get("sam3", {}) if isinstance(layer.metadata, dict) else {}
    return isinstance(meta, dict) and meta.get("kind") == HIDDEN_KIND


def count_layers(out, name: str, geometry: dict, diameter: float) -> tuple:
    """A `count_results.PreparedCount` 's (objects ``Labels``, centroids ``Points``) layers (worker-safe:
    no Qt)."""
    table = out.table
    labels = labels_layer(out.labels, {"name": name, "features": table, **geometry})
    size = max(3.0, 0.25 * (diameter if np.isfinite(diameter) else 10.0))
    points = points_layer(
        out.points,
        {
            "name": f"{name} centroids",
            "features": table,
            "size": size,
            "face_color": "yellow",
            "border_color": "black",
            **geometry,
        },
    )
    return labels, points


def set_changed_geometry(layer, geometry: dict) -> None:
    """Set only the placement attributes that differ: each set refreshes the layer (~5 ms)."""
    for key, value in geometry.items():
        current = getattr(layer, key)
        if key == "affine":
            current = current.affine_matrix
        value = np.asarray(value, dtype=float)
        if np.shape(current) != value.shape or not np.allclose(current, value):
            setattr(layer, key, value)


class LayerAdder:
    """Appends layers to a viewer, the first now and each further one on a later event-loop turn.

    ``when`` (optional) is checked right before each deferred append (e.g. "the image is still
    there"); a layer whose check fails, or that was `discard` ed, is dropped.
    """

    def __init__(self, viewer, later: Callable[[Callable[[], None]], None]) -> None:
        self.viewer = viewer
        self._later = later  # runs a callable on a later event-loop turn (the Qt shell's timer)
        self._queue: list[tuple[object, Callable[[], bool] | None]] = []
        self._closed = False

    @property
    def idle(self) -> bool:
        return not self._queue

    def pending(self, layer) -> bool:
        return any(ly is layer for ly, _ in self._queue)

    def alive(self, layer) -> bool:
        """In the viewer, or about to be."""
        return layer is not None and (layer in self.viewer.layers or self.pending(layer))

    def discard(self, layer) -> None:
        self._queue = [(ly, w) for ly, w in self._queue if ly is not layer]

    def close(self) -> None:
        self._closed = True
        self._queue = []

    def add(self, *layers, when: Callable[[], bool] | None = None) -> None:
        """Append ``layers`` in order: the first now (unless others are waiting), the rest later."""
        if self._closed:
            return
        was_idle = self.idle
        self._queue += [(ly, when) for ly in layers if ly is not None]
        if was_idle and self._queue:
            self._append_next()

    def _append_next(self) -> None:
        if self._closed or not self._queue:
            return
        layer, when = self._queue.pop(0)
        if when is None or when():
            self.viewer.layers.append(layer)
        if self._queue:
            self._later(self._append_next)

    def put_hidden(self, res, prepared):
        """The Segment result's "(hidden)" layer after a (re-)filter: updated, added or removed.

        ``res`` is the tab's `TextResult` (``layer``, ``hidden_layer``, ``ref``, ``image``); returns
        the hidden layer, or None.
        """
        hidden, layer = prepared.hidden, res.hidden_layer
        if hidden is None:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            self.discard(layer)
            return None
        if self.alive(layer):
            layer.data = hidden
            layer.features = res.layer.features
            return layer
        layer = prepared.hidden_layer
        if layer is None:
            layer = labels_layer(hidden, hidden_layer_kwargs(res.ref, res.layer.features))
        layer.name = f"{res.layer.name} (hidden)"  # after napari made the result's name unique
        self.add(layer, when=lambda: res.image in self.viewer.layers)
        return layer
