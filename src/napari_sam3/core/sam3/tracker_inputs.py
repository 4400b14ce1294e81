"""Clicks and boxes through the tracker head, on the detector's cached backbone tokens.

The steps of ``Sam3TrackerModel.forward`` without its own backbone pass: the tracker neck via
``Sam3VideoModel.get_vision_features_for_tracker`` (plus the no-memory embedding of a first
frame), then the prompt encoder and mask decoder. Callers hold the engine's lock and
``torch.inference_mode``.
"""

from __future__ import annotations

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.prompts import check_boxes, check_points


def click_prompt(points_xy, point_labels, box_xyxy, shape):
    """Checked clicks and at most one box: (points, labels, box, kind "points" or "box")."""
    points, labels = check_points(points_xy, point_labels, shape)
    box = None
    if box_xyxy is not None and np.asarray(box_xyxy).size:
        boxes, _ = check_boxes(box_xyxy, None, shape)
        if len(boxes) != 1:
            raise Sam3Error("Give one box per object for a click/box prompt.")
        box = boxes[0]
    if points is None and box is None:
        raise Sam3Error("Click on the object (or draw a box around it) first.")
    kind = "points" if points is not None else "box"
    return points, labels, box, kind


def tracker_embeddings_from(model, vision) -> list:
    """The tracker's image embeddings (one per feature level) from the detector's features."""
    feats, _ = tracker_video_features(model, vision)
    return single_image_embeddings(model.tracker_model, feats)


def tracker_video_features(model, vision) -> tuple[list, list]:
    """The tracker neck on the detector's backbone tokens, in the video tracker's layout.

    (features, position encodings), each a list of (H*W, 1, C) levels: what
    ``Sam3VideoModel`` caches per frame for ``Sam3TrackerVideoModel``.
    """
    feats, pos = model.get_vision_features_for_tracker(vision_embeds=vision)
    return list(feats), list(pos)


def single_image_embeddings(tracker, feats: list) -> list:
    """Video-layout features -> single-image embeddings (views, except the last, memory-free level)."""
    feats = list(feats)
    feats[-1] = feats[-1] + tracker.no_memory_embedding
    return [
        f.permute(1, 2, 0).reshape(1, -1, *size)
        for f, size in zip(feats, tracker.backbone_feature_sizes, strict=False)
    ]


def tracker_inputs(points, labels, box, scale, device) -> dict:
    """Pixel clicks / box scaled to the model's input size, shaped as the processor gives them."""
    import torch

    input_points = input_labels = input_boxes = None
    if points is not None:
        pts = torch.as_tensor(points, dtype=torch.float32) * scale
        input_points = pts[None, None].to(device)  # float32, as the processor gives
        input_labels = torch.as_tensor(labels, dtype=torch.int64)[None, None].to(device)
    if box is not None:
        b = torch.as_tensor(box, dtype=torch.float32).reshape(2, 2) * scale
        input_boxes = b.reshape(1, 1, 4).to(device)
    return {"input_points": input_points, "input_labels": input_labels, "input_boxes": input_boxes}


def decode(tracker, embeddings: list, image_pe, inputs: dict, multimask: bool):
    """Prompt encoder + mask decoder: (low-res mask logits, iou, object score logits)."""
    sparse, dense = tracker.prompt_encoder(**inputs, input_masks=None)
    low_res, iou, _, object_logits = tracker.mask_decoder(
        image_embeddings=embeddings[-1],
        image_positional_embeddings=image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_resolution_features=embeddings[:-1],
    )
    return low_res, iou, object_logits
