"""Options of ``napari-sam3 track`` (`TrackSettings`) and the ``--axis`` parser."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from napari_sam3.core.defaults import MODEL_ID, SCORE_THRESHOLD


@dataclass(frozen=True)
class TrackSettings:
    """Options of one ``track`` run.

    ``threshold`` is the score an object needs to start a track (`iter_track_stack`'s
    ``min_score``; None keeps the checkpoint's thresholds). ``axis`` is the stack axis to track
    along: None (the only one), an index into the stack's dimensions (length-1 ones dropped) or an
    axis letter (``"T"``, ``"Z"``...).
    """

    prompts: tuple[str, ...] = ()
    model: str | None = None
    device: str = "auto"
    threshold: float | None = SCORE_THRESHOLD
    start: int = 0
    axis: int | str | None = None
    overwrite: bool = False
    adapter: str | None = None  # a SAM3 adapter file (core.sam3.adapter), absolute path

    def __post_init__(self) -> None:
        """Checked here too (`core.requests.TrackRequest`), so ``run_track(TrackSettings(...))``
        from Python fails before any stack, as the CLI does."""
        request = self.track_request()
        object.__setattr__(self, "prompts", request.concepts)
        object.__setattr__(self, "axis", request.axis)

    @classmethod
    def from_request(cls, request, **io) -> TrackSettings:
        """Settings of a `core.requests.TrackRequest` plus the run's io (``model``, ``device``,
        ``overwrite``, ``adapter``); the fields keep their names, so reruns keep fingerprints."""
        return cls(
            prompts=request.concepts,
            threshold=request.min_score,
            start=request.start,
            axis=request.axis,
            **io,
        )

    def track_request(self):
        from napari_sam3.core.requests import TrackRequest

        return TrackRequest(
            concepts=self.prompts, min_score=self.threshold, start=self.start, axis=self.axis
        )

    def model_label(self) -> str:
        from napari_sam3.core.sam3.loading import resolve_source

        try:
            return resolve_source(self.model)
        except Exception:  # noqa: BLE001 - naming only
            return self.model or MODEL_ID

    def result_fields(self) -> dict:
        """The options that change the result (not device, overwrite)."""
        d = asdict(self)
        d.pop("device")
        d.pop("overwrite")
        d.pop("adapter")  # by content when given; runs without one keep their fingerprint
        if self.adapter:
            from napari_sam3.io.adapter_file import adapter_digest

            d["adapter"] = adapter_digest(self.adapter)
        return {"command": "track", **d, "model": self.model_label()}

    def fingerprint(self) -> str:
        text = json.dumps(self.result_fields(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_axis(text: str | None) -> int | str | None:
    """``--axis``: None, a non-negative index or one axis letter; `Sam3Error` (exit 2) otherwise."""
    from napari_sam3.core.validation import check_axis

    return check_axis(text, "--axis")
