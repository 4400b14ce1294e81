"""Clicked or boxed objects carried through a z/t stack by SAM3's video tracker.

    prompts = [ObjectPrompt(obj_id=1, frame=4, points_xy=[[30, 40]], point_labels=[1]),
               ObjectPrompt(obj_id=2, frame=4, box_xyxy=[10, 10, 25, 30]),
               ObjectPrompt(obj_id=1, frame=9, points_xy=[[33, 41]], point_labels=[0])]  # correction
    result = track_objects(engine, stack, prompts)   # core.tracking.stack_tracking.TrackResult
    result.labels      # (T, H, W) int32, label = obj_id in every slice

The engine already holds ``Sam3VideoModel``: its ``tracker_model`` is a ``Sam3TrackerVideoModel``
without a backbone of its own. Each slice goes through the engine's ONE backbone via
``engine.encode`` (so it lands in, and is read from, the engine's feature cache: a slice encoded
once, by a click or an earlier propagation, is not encoded again), the tracker neck turns those
features into the tracker's layout and they are placed in the tracker session's per-frame cache
just before the tracker runs on that slice; the session never needs a frame of pixels.

The order is the documented ``Sam3TrackerVideoModel`` usage: inputs are added frame by frame
(each followed by a model call on that frame, so every prompted frame is a conditioning frame),
then the objects are propagated forward from the first prompted frame to the end and backward
from it to the first slice. `iter_track_objects` yields `Progress` before each slice and holds
the engine lock only while the model runs, so a worker can cancel between slices.
tests/test_click_tracking.py checks the result against that documented usage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end
from napari_sam3.core.sam3.load_errors import model_errors
from napari_sam3.core.sam3.tracker_inputs import click_prompt
from napari_sam3.core.tracking.stack_tracking import TrackResult, _frames, _table
from napari_sam3.core.tracking.tracker_video import (
    add_object_inputs,
    frame_masks,
    new_tracker_session,
    tracker_processor,
)

__all__ = ["ObjectPrompt", "iter_track_objects", "track_objects"]

DEFAULT_PREPROCESSING = Preprocessing()


@dataclass(frozen=True)
class ObjectPrompt:
    """Clicks (x, y pixels; label 1 object / 0 background) and/or one box for one object on one slice.

    The same ``obj_id`` on several slices: corrections of that object there.
    """

    obj_id: int
    frame: int
    points_xy: Sequence | np.ndarray | None = None
    point_labels: Sequence | np.ndarray | None = None
    box_xyxy: Sequence | np.ndarray | None = None


def track_objects(engine, stack, prompts: Sequence[ObjectPrompt], **kwargs) -> TrackResult:
    """Propagate the prompted objects through ``stack``; synchronous `iter_track_objects`."""
    return run_to_end(iter_track_objects(engine, stack, prompts, **kwargs))


def iter_track_objects(
    engine,
    stack,
    prompts: Sequence[ObjectPrompt],
    *,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    rgb: bool | None = None,
    mask_threshold: float = 0.0,
) -> ProgressGen[TrackResult]:
    """Yields `Progress` per slice; returns a `TrackResult` (table prompt = "object <id>").

    Parameters
    ----------
    engine : `Sam3Engine` on a video-capable checkpoint (the published one is).
    stack : (T, H, W) or (T, H, W, 3) like `core.tracking.stack_tracking.iter_track_stack`.
    prompts : at least one `ObjectPrompt`; obj_id >= 1 (it becomes the label).
    mask_threshold : mask logit threshold (the processor's 0.0 by default).

    ``meta["object_scores"]``: {slice: {obj_id: score}} for every object, visible or not.
    """
    from napari_sam3.core.tracking.video_session import check_video_capable

    frames, frame_rgb = _frames(stack, rgb)
    n = len(frames)
    checked = _check_prompts(prompts, n, frames.shape[1:3])
    check_video_capable(engine.model)
    processor = tracker_processor(engine.processor)
    h, w = frames.shape[1:3]
    session = new_tracker_session(n, (h, w), engine.device, engine.dtype)
    labels = np.zeros((n, h, w), np.int32)
    scores: list[dict[int, float]] = [{} for _ in range(n)]
    all_scores: dict[int, dict[int, float]] = {}
    prompt_frames = sorted({p.frame for p in checked})
    start = prompt_frames[0]
    order = [(f, False) for f in prompt_frames]  # conditioning frames first (documented order)
    order += [(f, False) for f in range(start, n)] + [(f, True) for f in range(start, -1, -1)]
    total = len(order)
    encodes_before = engine.stats["vision_encodes"]
    began = time.perf_counter()
    for done, (idx, reverse) in enumerate(order):
        what = "Adding the clicks" if done < len(prompt_frames) else "Propagating the objects"
        yield Progress(f"{what}: slice {idx + 1} of {n}", done, total)
        encoded = engine.encode(frames[idx], preprocessing, frame_rgb)  # cached per slice
        feats, pos = engine.tracker_video_features(encoded)
        inputs = [p for p in checked if p.frame == idx] if done < len(prompt_frames) else []
        out = _step(engine, processor, session, idx, reverse, feats, pos, inputs)
        obj_ids, obj_scores, masks = frame_masks(processor, session, out, mask_threshold)
        _paint(labels[idx], scores[idx], obj_ids, obj_scores, masks)
        all_scores[idx] = dict(zip(obj_ids, obj_scores.tolist(), strict=True))
    seconds = time.perf_counter() - began
    yield Progress("Measuring the tracked objects", total, total)
    ids = sorted({p.obj_id for p in checked})
    table = _table(labels, scores, {i: f"object {i}" for i in ids})
    meta = {
        "objects": ids,
        "frames": n,
        "prompted_frames": prompt_frames,
        "start": start,
        "steps": total,
        "object_scores": dict(sorted(all_scores.items())),
        "vision_encodes": engine.stats["vision_encodes"] - encodes_before,
        "seconds": seconds,
        "seconds_per_frame": seconds / n,
        "source": engine.source,
        "device": str(engine.device),
    }
    return TrackResult(labels=labels, table=table, meta=meta)


def _check_prompts(prompts, n: int, shape) -> list[ObjectPrompt]:
    if isinstance(prompts, ObjectPrompt):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise Sam3Error("Click on (or draw a box around) at least one object before propagating.")
    out = []
    for p in prompts:
        if not isinstance(p.obj_id, (int, np.integer)) or int(p.obj_id) < 1:
            raise Sam3Error(f"Object ids must be whole numbers from 1, got {p.obj_id!r}.")
        if not isinstance(p.frame, (int, np.integer)) or not 0 <= int(p.frame) < n:
            raise Sam3Error(f"A click is on slice {p.frame!r}; the stack has slices 0 to {n - 1}.")
        points, labels, box, _ = click_prompt(p.points_xy, p.point_labels, p.box_xyxy, shape)
        out.append(ObjectPrompt(int(p.obj_id), int(p.frame), points, labels, box))
    keys = [(p.obj_id, p.frame) for p in out]
    if len(set(keys)) != len(keys):
        raise Sam3Error("Give all clicks of one object on one slice as one prompt.")
    return out


def _step(engine, processor, session, idx, reverse, feats, pos, inputs) -> object:
    """Add this slice's inputs (if any) and run the tracker on it, engine lock held."""
    import torch

    tracker = engine.model.tracker_model
    with (
        engine._lock,
        torch.inference_mode(),
        model_errors("propagating the objects", engine.device),
    ):
        session.cache.cache_vision_features(idx, {"vision_feats": feats, "vision_pos_embeds": pos})
        if not inputs:
            return tracker(inference_session=session, frame_idx=idx, reverse=reverse)
        out = None
        for p in inputs:  # one model call per added object, as the documented usage does
            add_object_inputs(processor, session, idx, p)
            out = tracker(inference_session=session, frame_idx=idx)
        return out


def _paint(labels: np.ndarray, scores: dict, obj_ids, obj_scores, masks) -> None:
    """This slice's objects (label = obj_id), painted afresh; the higher score wins overlaps."""
    labels[:] = 0
    scores.clear()
    for k in np.argsort(obj_scores, kind="stable"):
        mask = masks[k]
        if mask.any():
            labels[mask] = int(obj_ids[k])
    for k, obj_id in enumerate(obj_ids):
        if (labels == int(obj_id)).any():
            scores[int(obj_id)] = float(obj_scores[k])
