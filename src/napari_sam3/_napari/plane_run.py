"""What every session run starts from, captured when the user presses the button. No Qt."""

from __future__ import annotations

from dataclasses import dataclass

from napari_sam3._napari.layers import PlaneRef
from napari_sam3.core.images import Preprocessing


@dataclass(frozen=True)
class PlaneRun:
    """The image layer, its plane as shown then, preprocessing, and the model ``(source, device)``.

    A result lands on this plane even if the view moved meanwhile.
    """

    image: object
    ref: PlaneRef
    preprocessing: Preprocessing
    model: tuple[str, str]
