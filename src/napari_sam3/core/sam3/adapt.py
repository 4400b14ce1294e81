"""Adapt SAM3 to a user's labelled images: train an adapter (core.sam3.adapter) on cached features.

    result = run_to_end(iter_adapt(engine, examples, AdaptSettings("nucleus")))
    if result.selected:
        write_adapter(result.adapter, "nucleus.sam3-adapter.safetensors")  # napari_sam3.io
        engine.set_adapter(result.adapter)

Each image is encoded once by the engine (its feature cache: the vision backbone is ~95 % of a
SAM3 pass and stays frozen), so a training step runs the detector heads only: DETR encoder and
decoder, mask head, scorer, with low-rank updates on their linear layers, trained with the
matching loss of `core.sam3.matching_loss` (accepted objects positive, rejected ones hard
negatives).

Hold-out: with two or more images, `ADAPT_HOLDOUT` of the images (at least one) are kept out of
training; with one image, that fraction of its objects (training ignores them: a query that finds
one is neither rewarded nor punished). Before and after training the engine's own segmentation
(threshold and mask threshold as the segment command) is scored on the held-out objects with
`core.results.measure.match_labels` (F1 at IoU 0.5, mean IoU of the matches). The adapter is
*selected* only when it is better there; otherwise the result says so and the caller keeps the
base model.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_sam3.core.defaults import (
    ADAPT_HOLDOUT,
    ADAPT_LEARNING_RATE,
    ADAPT_RANK,
    ADAPT_STEPS,
    MASK_THRESHOLD,
    SCORE_THRESHOLD,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import parse_concepts
from napari_sam3.core.results.measure import match_labels
from napari_sam3.core.sam3.acceleration import heads_autocast
from napari_sam3.core.sam3.adapter import Sam3Adapter, adapted_layers, base_digest, set_active
from napari_sam3.core.sam3.matching_loss import Targets, detection_loss

MASK_CHUNK = 32  # objects resized to the mask head's resolution at a time


@dataclass
class AdaptExample:
    """One labelled image: ``labels`` the accepted objects (instance ids, 0 = background),
    ``rejected`` optional instance ids of objects the user rejected (hard negatives)."""

    name: str
    plane: np.ndarray
    labels: np.ndarray
    rejected: np.ndarray | None = None
    rgb: bool | None = None


@dataclass
class AdaptSettings:
    concept: str
    steps: int = ADAPT_STEPS
    rank: int = ADAPT_RANK
    learning_rate: float = ADAPT_LEARNING_RATE
    holdout: float = ADAPT_HOLDOUT
    seed: int = 0
    min_score: float = SCORE_THRESHOLD
    mask_threshold: float = MASK_THRESHOLD


@dataclass
class AdaptResult:
    """The trained adapter, held-out scores before -> after, and whether it was selected."""

    adapter: Sam3Adapter
    before: dict
    after: dict
    selected: bool
    message: str
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: float = 0.0


@dataclass
class _Split:
    """Training targets and held-out truth of one image."""

    example: AdaptExample
    train: np.ndarray | None  # labels trained on (None: image held out)
    ignore: np.ndarray | None  # held-out objects of a trained image
    truth: np.ndarray | None  # held-out objects scored
    exclude: np.ndarray | None  # trained objects: predictions of them are not scored


def split_holdout(examples: Sequence[AdaptExample], fraction: float, seed: int) -> list[_Split]:
    """Hold out whole images when there are several, else part of the one image's objects."""
    rng = np.random.default_rng(seed)
    if not 0.0 < fraction < 1.0:
        raise Sam3Error(f"The held-out fraction must lie between 0 and 1, got {fraction}.")
    if len(examples) >= 2:
        n_out = min(len(examples) - 1, max(1, round(fraction * len(examples))))
        held = set(rng.permutation(len(examples))[:n_out].tolist())
        return [
            _Split(ex, None, None, ex.labels, None)
            if i in held
            else _Split(ex, ex.labels, None, None, None)
            for i, ex in enumerate(examples)
        ]
    ex = examples[0]
    ids = np.unique(ex.labels)
    ids = ids[ids != 0]
    if ids.size < 2:
        raise Sam3Error(
            "One image with fewer than 2 labelled objects: nothing to train on and to check "
            "against. Label more objects or add images."
        )
    n_out = min(ids.size - 1, max(1, math.ceil(fraction * ids.size)))
    out_ids = rng.permutation(ids)[:n_out]
    is_out = np.isin(ex.labels, out_ids)
    held = np.where(is_out, ex.labels, 0)
    kept = np.where(is_out, 0, ex.labels)
    return [_Split(ex, kept, held, held, kept)]


def label_digest(labels: np.ndarray) -> str:
    arr = np.ascontiguousarray(labels)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def check_examples(examples: Sequence[AdaptExample]) -> None:
    if not examples:
        raise Sam3Error("No labelled images to adapt to; give images with their labels.")
    for ex in examples:
        shape = ex.plane.shape[:2] if ex.plane.ndim == 3 and ex.rgb is not False else ex.plane.shape
        for what, lab in (("labels", ex.labels), ("rejected objects", ex.rejected)):
            if lab is not None and lab.shape != tuple(shape)[:2]:
                raise Sam3Error(
                    f"{ex.name}: the {what} are {lab.shape[0]} x {lab.shape[1]} pixels but the "
                    f"image is {shape[0]} x {shape[1]}; give the label image of this image."
                )
    if not any(np.any(ex.labels) for ex in examples):
        raise Sam3Error("The labels hold no objects; label some objects first.")


# ---------------------------------------------------------------------- tensors
def _object_masks(labels: np.ndarray | None, size: tuple[int, int]):
    """(N, h, w) area-resized masks in [0, 1] and (N, 4) xyxy boxes in [0, 1] of ``labels``."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    if labels is None:
        return torch.zeros(0, *size), torch.zeros(0, 4)
    lab = np.asarray(labels)
    h, w = lab.shape
    ids = np.unique(lab)
    ids = ids[ids != 0]
    masks, boxes = [], []
    slices = ndimage.find_objects(np.searchsorted(ids, lab) * (lab != 0) + (lab != 0))
    for start in range(0, ids.size, MASK_CHUNK):
        chunk = ids[start : start + MASK_CHUNK]
        binary = torch.from_numpy(lab[None] == chunk[:, None, None]).float()
        masks.append(F.interpolate(binary[:, None], size=size, mode="area")[:, 0])
    for k in range(ids.size):
        sl = slices[k]
        boxes.append([sl[1].start / w, sl[0].start / h, sl[1].stop / w, sl[0].stop / h])
    if not masks:
        return torch.zeros(0, *size), torch.zeros(0, 4)
    return torch.cat(masks), torch.tensor(boxes, dtype=torch.float32)


def _trainable_vision(vision):
    """Cached features as ordinary tensors (inference tensors cannot enter autograd)."""
    return type(vision)(
        fpn_hidden_states=tuple(t.clone() for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(t.clone() for t in vision.fpn_position_encoding),
    )


@dataclass
class _TrainItem:
    vision: object
    targets: Targets


# ---------------------------------------------------------------------- scoring
def score_holdout(engine, splits: Sequence[_Split], concept: str, settings, adapter) -> dict:
    """F1 at IoU 0.5 and mean IoU of the engine's segmentation on the held-out objects."""
    tp = fp = fn = 0
    iou_sum = 0.0
    with engine._lock:
        previous = set_active(engine.model.detector_model, adapter)
        try:
            for sp in splits:
                if sp.truth is None:
                    continue
                cands = engine.segment_text(
                    sp.example.plane,
                    concept,
                    rgb=sp.example.rgb,
                    min_score=settings.min_score,
                    mask_threshold=settings.mask_threshold,
                )
                if sp.exclude is not None and len(cands):
                    cands = cands.subset(_not_matching(cands.masks, sp.exclude))
                m = match_labels(sp.truth, cands.to_label_image())
                tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
                iou_sum += m["mean_iou"] * m["tp"]
        finally:
            set_active(engine.model.detector_model, previous)
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0
    return {"f1": f1, "mean_iou": iou_sum / tp if tp else 0.0, "tp": tp, "fp": fp, "fn": fn}


def _not_matching(masks: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Indices of the masks that match no object of ``labels`` at IoU >= ``iou``."""
    areas = np.bincount(labels.ravel())
    keep = []
    for i, m in enumerate(masks):
        ids, inter = np.unique(labels[m], return_counts=True)
        sel = ids != 0
        ids, inter = ids[sel], inter[sel]
        best = (inter / (m.sum() + areas[ids] - inter)).max() if ids.size else 0.0
        if best < iou:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------------- training
def iter_adapt(
    engine, examples: Sequence[AdaptExample], settings: AdaptSettings
) -> Generator[Progress, None, AdaptResult]:
    """Train an adapter for ``settings.concept`` on ``examples``; yields progress, returns the
    `AdaptResult` (closing the generator cancels; the engine is left as it was)."""
    import torch

    start = time.perf_counter()
    concepts = parse_concepts(settings.concept)
    if len(concepts) != 1:
        raise Sam3Error("Adapt to one concept at a time (e.g. 'nucleus').")
    concept = concepts[0]
    if settings.steps < 1:
        raise Sam3Error(f"Adapting needs at least 1 step, got {settings.steps}.")
    check_examples(examples)
    splits = split_holdout(examples, settings.holdout, settings.seed)
    detector = engine.model.detector_model

    n = len(examples)
    for i, ex in enumerate(examples):  # encode once; the cache keeps them for scoring
        yield Progress(f"Encoding image {i + 1}/{n} ({ex.name})", i, n)
        with engine.skipping_tracker_neck():
            yield from engine.iter_encode(ex.plane, rgb=ex.rgb)

    yield Progress("Scoring the base model on the held-out labels", 0, settings.steps)
    before = score_holdout(engine, splits, concept, settings, None)

    with engine._lock, torch.inference_mode():
        text, text_mask = engine._text_features([concept])
    text_embeds = type(text)(pooler_output=text.pooler_output.clone())
    text_mask = text_mask.clone()
    items = _train_items(engine, splits)

    adapter = Sam3Adapter.new(detector, settings.rank, seed=settings.seed).requires_grad_(True)
    optim = torch.optim.AdamW(adapter.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    rng = np.random.default_rng(settings.seed)
    order: list[int] = []
    losses: list[float] = []
    train_start = time.perf_counter()
    for step in range(1, settings.steps + 1):
        if not order:
            order = rng.permutation(len(items)).tolist()
        item = items[order.pop()]
        loss = _train_step(engine, adapter, optim, item, text_embeds, text_mask)
        losses.append(loss)
        per_step = (time.perf_counter() - train_start) / step
        left = per_step * (settings.steps - step)
        yield Progress(
            f"Adapting: step {step}/{settings.steps}, loss {loss:.3f}, about {left:.0f} s left",
            step,
            settings.steps,
        )
    step_seconds = (time.perf_counter() - train_start) / settings.steps
    adapter.requires_grad_(False)

    yield Progress("Scoring the adapted model on the held-out labels", settings.steps, None)
    after = score_holdout(engine, splits, concept, settings, adapter)
    selected = (after["f1"], after["mean_iou"]) > (before["f1"], before["mean_iou"])
    message = _verdict(before, after, selected)
    adapter.meta.update(
        base=engine.source,
        base_digest=base_digest(detector),
        concept=concept,
        images=[ex.name for ex in examples],
        label_digests=[label_digest(ex.labels) for ex in examples],
        held_out=_held_out_names(splits),
        steps=settings.steps,
        learning_rate=settings.learning_rate,
        adapted_layers=len(adapted_layers(detector)),
        before=before,
        after=after,
        selected=selected,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    seconds = time.perf_counter() - start
    return AdaptResult(adapter, before, after, selected, message, losses, seconds, step_seconds)


def _held_out_names(splits: Sequence[_Split]) -> list[str]:
    if len(splits) == 1:
        n = int(np.unique(splits[0].truth).size - 1)
        return [f"{splits[0].example.name}: {n} object(s)"]
    return [sp.example.name for sp in splits if sp.train is None]


def _verdict(before: dict, after: dict, selected: bool) -> str:
    change = (
        f"held-out F1 {before['f1']:.3f} -> {after['f1']:.3f}, "
        f"mean IoU {before['mean_iou']:.3f} -> {after['mean_iou']:.3f}"
    )
    if selected:
        return f"The adapted model is better: {change}."
    return f"The adapted model is not better ({change}); keeping the base model."


def _train_items(engine, splits: Sequence[_Split]) -> list[_TrainItem]:
    """Cached features and targets at the mask head's resolution of every trained image."""
    items = []
    for sp in splits:
        if sp.train is None:
            continue
        ex = sp.example
        encoded = engine.encode(ex.plane, rgb=ex.rgb)  # cached: a hash
        items.append(train_item(encoded.vision, sp.train, sp.ignore, ex.rejected))
    return items


def train_item(vision, labels, ignore=None, rejected=None) -> _TrainItem:
    """Trainable copies of cached features and the targets of ``labels`` at the mask head's
    resolution (``ignore``: objects left out; ``rejected``: hard negatives; label images)."""
    vision = _trainable_vision(vision)
    size = tuple(vision.fpn_hidden_states[0].shape[-2:])  # the mask head's resolution
    masks, boxes = _object_masks(labels, size)
    ignored = _object_masks(ignore, size)[0] if ignore is not None else None
    negatives = _object_masks(rejected, size)[0] if rejected is not None else None
    return _TrainItem(vision, Targets(masks, boxes, ignored, negatives))


def _train_step(engine, adapter, optim, item: _TrainItem, text_embeds, text_mask) -> float:
    """One optimisation step on one image under the engine's lock (its adapter is restored)."""
    with engine._lock:
        autocast = heads_autocast(engine.device, engine.cpu_fast_path)
        return train_step(
            engine.model.detector_model, adapter, optim, item, text_embeds, text_mask, autocast
        )


def train_step(detector, adapter, optim, item: _TrainItem, text_embeds, text_mask, autocast):
    """Forward (under ``autocast``, a context), matching loss, backward, optimiser step; returns
    the loss. The detector's active adapter is ``adapter`` during the step only."""
    import torch

    previous = set_active(detector, adapter)
    try:
        with torch.enable_grad(), autocast:
            out = detector(
                vision_embeds=item.vision, text_embeds=text_embeds, attention_mask=text_mask
            )
        loss, _ = detection_loss(out, item.targets)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    finally:
        set_active(detector, previous)
    return float(loss.detach())
