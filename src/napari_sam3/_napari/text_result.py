"""The last text / exemplar result and the layer its re-filter controls drive. Qt-free.

Re-filtering (score threshold, min area, refinement, hidden objects) rewrites the result layer's data
without a model call. That must never destroy user work, and assigning ``layer.data`` also clears the
layer's undo history. So the result remembers the label array it last wrote (``written``): while the
layer still holds exactly that, nobody has touched it and a re-filter may replace it. Once the user has
painted, filled, erased, or committed a candidate into it, the layer is theirs: it is left exactly as
it is (pixels and undo history), and the next re-filter writes a NEW result layer, which the controls
then drive. The status line and the "Controls drive" line say which layer that is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari.identity import find_layer, in_viewer
from napari_sam3._napari.review_session import carry_over
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.review import drop_rejected


@dataclass
class TextResult:
    """Raw candidates (above the engine floor) of one run, where they belong, and their layers."""

    raw: Candidates
    ref: L.PlaneRef
    image: object
    prompt_text: str
    review: bool = False  # its objects carry a review ``status`` from the start
    layer: object = None
    hidden_layer: object = None
    written: np.ndarray | None = field(default=None, repr=False)  # what we last put in ``layer``
    kept: list = field(default_factory=list)  # layers left to the user after they edited them

    def image_present(self, viewer) -> bool:
        return find_layer(viewer, self.ref.image_uid) is not None or in_viewer(viewer, self.image)

    def edited(self) -> bool:
        """Whether the user changed the driven layer since we last wrote it."""
        if self.layer is None or self.written is None:
            return False
        data = self.layer.data
        if tuple(data.shape) != self.written.shape:
            return True
        # objects rejected in review leave the data (`review_session.apply_rejections`): no edit
        written, _ = drop_rejected(self.written, self.layer.features)
        return not np.array_equal(np.asarray(data), written)

    def release_if_edited(self) -> bool:
        """Leave an edited layer (and its hidden companion) to the user; True if it was edited."""
        if not self.edited():
            return False
        self.kept.append(self.layer)
        self.layer, self.hidden_layer, self.written = None, None, None
        return True

    def layers_to_build(self, adder: B.LayerAdder) -> tuple[bool, bool]:
        """(main, hidden): the layers a re-filter must build in the worker."""
        fresh = not adder.alive(self.layer) or self.edited()
        return fresh, fresh or not adder.alive(self.hidden_layer)


def apply_prepared(viewer, adder: B.LayerAdder, res: TextResult, prepared: L.PreparedResult) -> str:
    """Main thread: put a (re-)filtered result into the driven layer, or a new one; the status text.

    An edited driven layer is never written to (see the module docstring).
    """
    cands, data, kwargs = prepared.cands, prepared.data, prepared.kwargs
    released = res.release_if_edited()
    old_features = None
    if adder.alive(res.layer):
        old_features = res.layer.features
        res.layer.data = data  # untouched since we wrote it: nothing of the user's is lost
        res.layer.features = kwargs["features"]
    else:
        layer = prepared.layer
        if layer is None or any(layer is k for k in res.kept):
            layer = B.labels_layer(data, kwargs)
        res.layer = layer
        adder.add(res.layer)
    res.written = np.array(data, copy=True)  # before review takes out the rejected objects
    if old_features is not None:  # review decisions follow their objects through the re-filter
        carry_over(res.layer, old_features)
    res.hidden_layer = adder.put_hidden(res, prepared)
    feats = kwargs["features"]
    n_hidden = int((feats["visible_area"] == 0).sum()) if len(feats) else 0
    extra = f", {n_hidden} hidden by overlaps" if n_hidden else ""
    text = (
        f"{len(cands)} objects ({len(res.raw)} candidates before filtering){extra} "
        f"in '{res.layer.name}'."
    )
    if released:
        text += f" Your edits are kept in '{res.kept[-1].name}' (not re-filtered)."
    return text
