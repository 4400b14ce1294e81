"""Track every instance of a concept through a z/t stack with SAM3's video model.

    result = track_stack(engine, stack, "nucleus")          # stack: (T, H, W) or (T, H, W, 3)
    result.labels      # (T, H, W) int32, the same id for the same object in every frame
    result.table       # one row per (frame, object): frame, label, prompt, score, area, ...

SAM3 is a detector and a memory tracker sharing one backbone; the engine already holds the whole
``Sam3VideoModel``, so tracking loads nothing new. Each frame is normalised like a single plane
(`core.images.to_model_rgb`), the detector finds the concepts in it and the tracker carries the
objects of earlier frames into it (core.video_session drives transformers). `iter_track_stack`
yields `Progress` before each frame, holding the engine lock only while the model runs, so a
worker can show progress and cancel between frames; `track_stack` runs it to the end.

Objects of different concepts may overlap in the model output; in the label image the higher
score wins the pixel, and the table reports what is visible (``area`` = pixels of that id).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing, to_model_rgb, validate_plane
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end
from napari_sam3.core.prompts import parse_concepts
from napari_sam3.core.results.columns import BBOX_COLUMNS, CENTROID_COLUMNS
from napari_sam3.core.results.measure import measure_labels
from napari_sam3.core.sam3.acceleration import heads_autocast
from napari_sam3.core.sam3.detections import check_threshold
from napari_sam3.core.sam3.load_errors import model_errors
from napari_sam3.core.tracking.video_session import (
    FramePass,
    check_video_capable,
    new_session,
    thresholds,
    using_thresholds,
    video_processor,
)

__all__ = ["TRACK_COLUMNS", "TrackResult", "iter_track_stack", "track_stack"]

DEFAULT_PREPROCESSING = Preprocessing()
TRACK_COLUMNS = ("frame", "label", "prompt", "score", "area", *CENTROID_COLUMNS, *BBOX_COLUMNS)


@dataclass
class TrackResult:
    """What tracking a stack returns.

    Attributes
    ----------
    labels : (T, H, W) int32; one id per tracked object, the same in every frame; 0 = background.
    table : one row per (frame, object) in `TRACK_COLUMNS` order; ``area`` is the object's pixel
        count in that frame of ``labels``, ``score`` the model's score for it there.
    meta : concepts, frames, start, thresholds, timings, source and device.
    """

    labels: np.ndarray
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def n_tracks(self) -> int:
        """Number of distinct tracked objects."""
        return int(self.table["label"].nunique())


def track_stack(engine, stack: np.ndarray, concepts: str | Sequence[str], **kwargs) -> TrackResult:
    """Track the concepts through ``stack``; synchronous `iter_track_stack` (same arguments)."""
    return run_to_end(iter_track_stack(engine, stack, concepts, **kwargs))


def iter_track_stack(
    engine,
    stack: np.ndarray,
    concepts: str | Sequence[str],
    *,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    rgb: bool | None = None,
    min_score: float | None = None,
    start: int = 0,
) -> ProgressGen[TrackResult]:
    """Track every instance of the concepts through the frames; yields `Progress`, returns a `TrackResult`.

    Parameters
    ----------
    engine : `core.engine.Sam3Engine`; its loaded ``Sam3VideoModel`` is used (nothing is loaded).
    stack : (T, H, W) gray, (T, H, W, 3|4) RGB(A), or (T, H, W, C) with ``preprocessing.channel``;
        at least 2 frames.
    concepts : "nucleus" or "nucleus, mitotic cell" or a list.
    preprocessing, rgb : how each frame becomes model input, as for a single plane.
    min_score : score an object needs to start a track (also lowers the detection threshold to
        it); None keeps the checkpoint's thresholds (facebook/sam3: 0.5 detect, 0.7 new track).
    start : frame to start from; tracks run forward to the last frame, then back from ``start``
        to frame 0 in the same session (so objects keep their ids both ways).
    """
    names = parse_concepts(concepts)
    if min_score is not None:
        check_threshold(min_score, "min_score")
    frames, frame_rgb = _frames(stack, rgb)
    n = len(frames)
    if not isinstance(start, (int, np.integer)) or not 0 <= int(start) < n:
        raise Sam3Error(f"The start frame must be between 0 and {n - 1}, got {start!r}.")
    start = int(start)
    for i in range(n):  # bad frames fail now, not after minutes of tracking
        _check_frame(frames[i], frame_rgb, i)
    h, w = to_model_rgb(frames[0], preprocessing, rgb=frame_rgb).shape[:2]
    model = engine.model
    check_video_capable(model)
    detection, new_object = thresholds(model, min_score)
    processor = video_processor(engine.processor)
    session = new_session(processor, names, n, (h, w), engine.device, engine.dtype)

    labels = np.zeros((n, h, w), np.int32)
    frame_scores: list[dict[int, float]] = [{} for _ in range(n)]
    prompts: dict[int, str] = {}
    passes = [(range(start, n), n - 1, False)]
    if start > 0:
        passes.append((range(start - 1, -1, -1), 0, True))
    what = ", ".join(names)
    began, done = time.perf_counter(), 0
    for order, end, reverse in passes:
        frame_pass = FramePass(model, session, end, reverse)
        for idx in order:
            yield Progress(f"Tracking {what}: frame {idx + 1} of {n}", done, n)
            pixel_values = engine.pixel_values(
                to_model_rgb(frames[idx], preprocessing, rgb=frame_rgb)
            )
            outputs = _step(engine, processor, frame_pass, idx, pixel_values, detection, new_object)
            for frame_idx, post in outputs:
                _paint(labels[frame_idx], frame_scores[frame_idx], prompts, post)
            done += 1
    seconds = time.perf_counter() - began
    yield Progress("Measuring the tracked objects", n, n)
    table = _table(labels, frame_scores, prompts)
    meta = {
        "concepts": names,
        "frames": n,
        "start": start,
        "min_score": min_score,
        "detection_threshold": detection,
        "new_object_threshold": new_object,
        "hotstart_delay": int(model.hotstart_delay),
        "tracks": int(table["label"].nunique()),
        "seconds": seconds,
        "seconds_per_frame": seconds / n,
        "source": engine.source,
        "device": str(engine.device),
    }
    return TrackResult(labels=labels, table=table, meta=meta)


# ------------------------------------------------------------------------------ input checks
def _frames(stack, rgb: bool | None) -> tuple[np.ndarray, bool | None]:
    """The stack as an array of frames, and the ``rgb`` flag for each frame."""
    arr = np.asarray(stack)
    single = arr.ndim == 2 or (
        arr.ndim == 3 and (rgb is True or (rgb is None and arr.shape[-1] in (3, 4)))
    )
    if single or (arr.ndim in (3, 4) and arr.shape[0] == 1):
        raise Sam3Error(
            f"Tracking needs a stack of at least 2 frames, got shape {arr.shape}; "
            "use Segment on a single plane."
        )
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise Sam3Error(
            f"Tracking needs a (frames, height, width) or (frames, height, width, 3) stack, got "
            f"shape {arr.shape}; for more dimensions pick the axis to track along (e.g. one "
            "channel or one time point) first."
        )
    if arr.ndim == 4 and rgb is None and arr.shape[-1] in (3, 4):
        rgb = True
    return arr, rgb


def _check_frame(frame: np.ndarray, rgb: bool | None, index: int) -> None:
    try:
        validate_plane(frame, rgb=rgb)
    except Sam3Error as exc:
        raise Sam3Error(f"Frame {index}: {exc}") from None


# ------------------------------------------------------------------------------ model step
def _step(engine, processor, frame_pass, idx, pixel_values, detection, new_object) -> list:
    """One frame through the video model (engine lock held); the post-processed final outputs."""
    import torch

    model = frame_pass.model
    with (
        engine._lock,
        torch.inference_mode(),
        model_errors("tracking through the frames", engine.device),
        using_thresholds(model, detection, new_object),
    ):
        # The engine's CPU fast path (bf16 autocast, as SAM3's own video predictor runs on GPUs)
        with heads_autocast(engine.device, getattr(engine, "cpu_fast_path", "off")):
            ready = frame_pass.step(idx, pixel_values)
        return [
            (out.frame_idx, processor.postprocess_outputs(frame_pass.session, out)) for out in ready
        ]


# ------------------------------------------------------------------------------ results
def _paint(labels: np.ndarray, scores: dict, prompts: dict, post: dict) -> None:
    """Paint one frame's objects (id = SAM3 object id + 1); the higher score wins overlaps."""
    obj_ids = post["object_ids"].tolist()
    if not obj_ids:
        return
    obj_scores = post["scores"].float().tolist()
    masks = post["masks"].cpu().numpy()
    for prompt, ids in post["prompt_to_obj_ids"].items():
        for obj_id in ids:
            prompts[int(obj_id) + 1] = str(prompt)
    for k in np.argsort(obj_scores, kind="stable"):
        label = int(obj_ids[k]) + 1
        labels[masks[k]] = label
        scores[label] = float(obj_scores[k])


def _table(labels: np.ndarray, frame_scores: list[dict], prompts: dict) -> pd.DataFrame:
    """One row per (frame, visible object), measured on the label image."""
    parts = []
    for f in range(labels.shape[0]):
        if not frame_scores[f]:
            continue
        part = measure_labels(labels[f], scores=frame_scores[f], prompts=prompts)
        part.insert(0, "frame", f)
        parts.append(part[list(TRACK_COLUMNS)])
    if not parts:
        return _empty_table()
    return pd.concat(parts, ignore_index=True)


def _empty_table() -> pd.DataFrame:
    data = {c: pd.Series(dtype=np.int64) for c in TRACK_COLUMNS}
    data["prompt"] = pd.Series(dtype=object)
    data["score"] = pd.Series(dtype=np.float64)
    for c in CENTROID_COLUMNS:
        data[c] = pd.Series(dtype=np.float64)
    return pd.DataFrame(data, columns=list(TRACK_COLUMNS))
