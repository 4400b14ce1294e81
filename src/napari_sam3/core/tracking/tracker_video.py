"""The transformers side of propagating clicks: a ``Sam3TrackerVideoModel`` session fed by the engine.

The session is the documented ``Sam3TrackerVideoInferenceSession`` with no frames of pixels:
`click_tracking` puts each slice's tracker features into the session's per-frame cache just
before the tracker runs on it (what ``Sam3VideoModel`` itself does for its tracker), and the
session only needs to know how many frames there are (the tracker picks memory frames with it).
torch and transformers are imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def tracker_processor(processor: Any) -> Any:
    """A ``Sam3TrackerVideoProcessor`` from the image processor we already have.

    It scales clicks and boxes to the model's input size and post-processes the masks exactly
    as the published processor does; checkpoint folders need not hold a video processor config.
    """
    from transformers import Sam2VideoVideoProcessor, Sam3TrackerVideoProcessor

    image = processor.image_processor
    video = Sam2VideoVideoProcessor(
        size=dict(image.size), image_mean=image.image_mean, image_std=image.image_std
    )
    return Sam3TrackerVideoProcessor(image_processor=image, video_processor=video)


def new_tracker_session(n_frames: int, shape: tuple[int, int], device, dtype) -> Any:
    """A tracker session for ``n_frames`` slices of ``shape`` (H, W); no pixels are stored."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoInferenceSession,
    )

    session = Sam3TrackerVideoInferenceSession(
        video_height=int(shape[0]),
        video_width=int(shape[1]),
        inference_device=device,
        inference_state_device=device,
        video_storage_device=device,
        dtype=dtype,
        max_vision_features_cache_size=1,  # the current slice; filled just before each step
    )
    session.processed_frames = dict.fromkeys(range(int(n_frames)))  # num_frames for the memory
    return session


def add_object_inputs(processor, session, frame_idx: int, prompt) -> None:
    """One object's clicks and/or box on one slice, through the processor (pixel x, y)."""
    kwargs: dict = {}
    if prompt.points_xy is not None:
        kwargs["input_points"] = [[np.asarray(prompt.points_xy, float).tolist()]]
        kwargs["input_labels"] = [[np.asarray(prompt.point_labels, int).tolist()]]
    if prompt.box_xyxy is not None:
        kwargs["input_boxes"] = [[np.asarray(prompt.box_xyxy, float).tolist()]]
    processor.add_inputs_to_inference_session(
        inference_session=session, frame_idx=frame_idx, obj_ids=int(prompt.obj_id), **kwargs
    )


def frame_masks(
    processor, session, out, mask_threshold: float = 0.0
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(object ids, scores, (N, H, W) bool masks) of one tracker output at the slice size.

    Score = sigmoid(object score logit): the tracker's belief that the object is in the slice
    (its mask is empty when that logit is negative).
    """
    masks = processor.post_process_masks(
        [out.pred_masks],
        original_sizes=[[session.video_height, session.video_width]],
        mask_threshold=mask_threshold,
    )[0]
    masks = masks[:, 0].cpu().numpy().astype(bool)
    scores = out.object_score_logits.float().sigmoid().reshape(-1).cpu().numpy()
    return [int(i) for i in out.object_ids], scores, masks
