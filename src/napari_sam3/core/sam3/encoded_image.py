"""The cached vision features of one plane (EncodedImage) and the few ways the engine handles them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EncodedImage:
    """Vision features of one plane under one model + preprocessing (the expensive part).

    ``vision`` is the detector's ``Sam3VisionEncoderOutput`` (backbone tokens + FPN levels);
    ``tracker`` the tracker's image embeddings derived from the same backbone tokens (computed on
    first click, cheap), ``tracker_video`` the same neck output in the video tracker's layout
    (propagation through slices reads it; ``tracker`` is mostly views of it). ``shape`` is the plane's (H, W), ``model_key`` names the model.
    """

    key: str
    model_key: str
    shape: tuple[int, int]
    vision: Any
    seconds: float
    tracker: list | None = None
    tracker_video: list | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held by this entry alone (the shared position encodings are not counted).

        ``tracker`` levels are mostly views of ``tracker_video`` ones: each storage counts once.
        """
        total, seen = 0, set()
        for t in [*vision_tensors(self.vision), *(self.tracker or ()), *(self.tracker_video or ())]:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += t.element_size() * t.nelement()
        return total


def vision_tensors(vision) -> list:
    """The tensors an entry owns: backbone tokens and FPN levels (not the shared encodings)."""
    out = []
    if vision is None:
        return out
    if getattr(vision, "last_hidden_state", None) is not None:
        out.append(vision.last_hidden_state)
    out.extend(getattr(vision, "fpn_hidden_states", None) or ())
    return out


def slim_for_cache(vision, position_encodings: dict) -> None:
    """Drop what the prompts never read and share the position encodings, in place.

    The sine position encodings depend only on the feature-map shapes: ``position_encodings``
    (one dict per engine) keeps one copy for all cached images instead of storing ~45 % of every
    entry again.
    """
    vision.hidden_states = None
    vision.attentions = None
    shapes = tuple((tuple(t.shape), t.dtype) for t in vision.fpn_position_encoding)
    shared = position_encodings.setdefault(shapes, vision.fpn_position_encoding)
    vision.fpn_position_encoding = shared


def expand_vision(vision, n: int):
    """The cached features seen n times along the batch dimension (views, no copies)."""
    if n == 1:
        return vision
    out = type(vision)(
        last_hidden_state=vision.last_hidden_state.expand(n, *vision.last_hidden_state.shape[1:]),
        fpn_hidden_states=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(
            t.expand(n, *t.shape[1:]) for t in vision.fpn_position_encoding
        ),
    )
    return out
