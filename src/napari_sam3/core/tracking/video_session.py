"""The transformers side of tracking through frames: one ``Sam3VideoModel`` session, one frame a step.

``Sam3VideoModel.propagate_in_video_iterator`` runs a whole pass inside one generator. We call the
same ``forward`` once per frame ourselves, with the same hot-start buffer, so that the caller can
report progress, release the engine lock and cancel between frames. Frames are handed to the
session one at a time and dropped once processed (``forward`` reads only the current frame), so a
long stack never sits in memory as model input; the session still knows the number of frames
(the tracker uses it to pick its memory frames). tests/test_stack_tracking.py checks the result
against the documented transformers usage.

torch and transformers are imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
from typing import Any

from napari_sam3.core.errors import Sam3Error

# transformers' video tracker hard-codes 64-wide memory keys (Sam3TrackerVideo memory attention).
MEMORY_DIM = 64


def check_video_capable(model: Any) -> None:
    """Raise `Sam3Error` when the checkpoint's tracker cannot track through frames.

    The published checkpoint can; a shrunken test checkpoint (memory not 64 wide, or hidden size
    not a larger multiple of it) would fail deep inside transformers with a shape error.
    """
    tracker = getattr(model, "tracker_model", None)
    mem = getattr(tracker, "mem_dim", None)
    hidden = getattr(tracker, "hidden_dim", None)
    if tracker is None or not hasattr(model, "propagate_in_video_iterator"):
        raise Sam3Error(
            "This model has no video tracker; load the full SAM3 checkpoint (facebook/sam3)."
        )
    if mem != MEMORY_DIM or hidden is None or hidden <= mem or hidden % mem:
        raise Sam3Error(
            f"This checkpoint's tracker (memory {mem}, hidden {hidden}) cannot track through "
            "frames; use the full SAM3 checkpoint (for tests: make_tiny_checkpoint(..., video=True))."
        )


def video_processor(processor: Any) -> Any:
    """A ``Sam3VideoProcessor`` from the image processor and tokenizer we already have.

    Checkpoint folders (ours and the tiny test one) need not hold a video processor config; the
    session only needs the tokenizer (text prompts) and the post-processing, so nothing is loaded.
    """
    from transformers import Sam2VideoVideoProcessor, Sam3VideoProcessor

    image = processor.image_processor
    video = Sam2VideoVideoProcessor(
        size=dict(image.size), image_mean=image.image_mean, image_std=image.image_std
    )
    return Sam3VideoProcessor(
        image_processor=image, video_processor=video, tokenizer=processor.tokenizer
    )


def thresholds(model: Any, min_score: float | None) -> tuple[float, float]:
    """(detection, new-object) score thresholds for ``min_score``; None keeps the checkpoint's.

    The video model keeps detections above the first and starts a new track only above the second
    (0.5 / 0.7 for facebook/sam3). ``min_score`` is the score an object needs to start a track; the
    detection threshold is lowered with it so that such objects are detected at all.
    """
    config = model.config
    det, new = float(config.score_threshold_detection), float(config.new_det_thresh)
    if min_score is None:
        return det, new
    return min(det, float(min_score)), float(min_score)


@contextlib.contextmanager
def using_thresholds(model: Any, detection: float, new_object: float):
    """Set the model's thresholds for one step (under the engine lock) and restore them after."""
    before = model.score_threshold_detection, model.new_det_thresh
    model.score_threshold_detection, model.new_det_thresh = detection, new_object
    try:
        yield
    finally:
        model.score_threshold_detection, model.new_det_thresh = before


def new_session(
    processor: Any, concepts: list[str], n_frames: int, shape: tuple[int, int], device, dtype
) -> Any:
    """A session for ``n_frames`` frames of ``shape`` with the text prompts; no frame loaded yet."""
    session = processor.init_video_session(inference_device=device, dtype=dtype)
    # One slot per frame: ``num_frames`` (len of this dict) bounds the tracker's memory look-up;
    # `FramePass.step` fills a slot just for its frame.
    session.processed_frames = dict.fromkeys(range(int(n_frames)))
    # postprocess_outputs scales the masks to the video size
    session.video_height, session.video_width = int(shape[0]), int(shape[1])
    processor.add_text_prompt(session, concepts)
    return session


class FramePass:
    """One pass over frames (forward, or reverse from the start frame) of a video session.

    `step` runs the model on one frame and returns the outputs that are final now: like
    ``propagate_in_video_iterator``, the first ``hotstart_delay`` outputs are held back so that
    objects removed by the hot-start heuristics (duplicates, unmatched) vanish from them too.
    """

    def __init__(self, model: Any, session: Any, end_frame: int, reverse: bool) -> None:
        self.model = model
        self.session = session
        self.end_frame = end_frame
        self.reverse = reverse
        self._buffer: list = []

    def step(self, frame_idx: int, pixel_values: Any) -> list:
        """Track into ``frame_idx`` (pixel values from the image processor); outputs now final."""
        session = self.session
        session.add_new_frame(pixel_values, frame_idx)
        try:
            out = self.model(inference_session=session, frame_idx=frame_idx, reverse=self.reverse)
        finally:
            session.processed_frames[frame_idx] = None  # only the current frame is ever read
        delay = int(self.model.hotstart_delay)
        if delay <= 0:
            return [out]
        self._buffer.append(out)
        session.hotstart_removed_obj_ids.update(out.removed_obj_ids)
        if frame_idx == self.end_frame:
            ready, self._buffer = self._buffer, []
        elif len(self._buffer) >= delay:
            ready, self._buffer = self._buffer[:1], self._buffer[1:]
        else:
            ready = []
        return ready
