"""Detector and tracker outputs turned into Candidates at plane size, as the processors do it.

Detector: ``Sam3Processor.post_process_instance_segmentation`` (score = sigmoid(logit) *
sigmoid(presence); masks = bilinear(sigmoid(mask logits)) > threshold). Tracker:
``Sam3TrackerProcessor.post_process_masks`` (bilinear(mask logits) > threshold, iou as scores).
tests/test_parity.py checks both against the documented transformers usage.
"""

from __future__ import annotations

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates, boxes_from_masks

MASK_CHUNK_PIXELS = 64 * 1024 * 1024  # float32 elements per upsampling chunk (256 MiB)


def check_threshold(value: float, name: str) -> None:
    """Scores and mask probabilities live in [0, 1]; anything else is a caller's mistake."""
    if not (0.0 <= float(value) <= 1.0):
        raise Sam3Error(f"{name} must lie between 0 and 1, got {value}.")


def detector_candidates(out, concepts, shape, min_score, mask_threshold, kind) -> list:
    """One Candidates per concept from a batched detector output (row i = concepts[i])."""
    return [
        instances(
            out.pred_logits[i],
            None if out.presence_logits is None else out.presence_logits[i],
            out.pred_boxes[i],
            out.pred_masks[i],
            shape,
            min_score,
            mask_threshold,
            concepts[i],
            kind,
        )
        for i in range(len(concepts))
    ]


def instances(logits, presence, boxes, mask_logits, shape, min_score, mask_threshold, prompt, kind):
    """One prompt's detections, as Sam3Processor.post_process_instance_segmentation computes them
    (score = sigmoid(logit) * sigmoid(presence); masks = bilinear(sigmoid(mask)) > threshold),
    keeping score >= min_score."""
    import torch

    scores = logits.float().sigmoid()
    if presence is not None:
        scores = scores * presence.float().sigmoid()
    keep = torch.nonzero(scores >= min_score).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]  # best first
    if keep.numel() == 0:
        return Candidates.empty(shape, kind)
    masks = upsample_masks(mask_logits[keep].float(), shape, mask_threshold, sigmoid=True)
    sel = scores[keep].cpu().numpy()
    return Candidates(masks, sel, boxes_from_masks(masks), [prompt] * len(sel), kind)


def tracker_masks(low_res, iou, object_logits, shape, mask_threshold):
    """The mask decoder's first object: (K, H, W) bool masks, iou scores, object probability."""
    import torch

    logits = low_res[0, 0].float()  # (K, h', w')
    iou_scores = iou[0, 0].float().cpu().numpy()
    masks = upsample_masks(logits, shape, mask_threshold, sigmoid=False)
    object_score = float(torch.sigmoid(object_logits.float().reshape(-1)[0]))
    return masks, iou_scores, object_score


def tracker_candidates(masks, iou_scores, kind) -> Candidates:
    """Click/box masks as Candidates, best iou first (iou doubles as the score)."""
    prompt = "points" if kind == "points" else "box"
    return Candidates(
        masks, iou_scores, boxes_from_masks(masks), [prompt] * len(masks), kind, iou_scores
    ).sorted_by_score()


def upsample_masks(mask_logits, shape, threshold: float, sigmoid: bool) -> np.ndarray:
    """(K, h, w) logits -> (K, H, W) bool at plane size, bilinear (align_corners=False), chunked."""
    import torch.nn.functional as F

    k = mask_logits.shape[0]
    h, w = shape
    out = np.zeros((k, h, w), dtype=bool)
    step = max(1, MASK_CHUNK_PIXELS // max(1, h * w))
    for i in range(0, k, step):
        chunk = mask_logits[i : i + step]
        if sigmoid:
            chunk = chunk.sigmoid()
        up = F.interpolate(chunk[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        out[i : i + step] = (up > threshold).cpu().numpy()
    return out
