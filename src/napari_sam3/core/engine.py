"""One object per loaded SAM3 model: encode an image once, prompt it many times.

Public API (other modules code against these names; they stay stable):

    engine = Sam3Engine.load(source=None, device="auto", dtype=None)
        source: hub id or local folder; None -> $NAPARI_SAM3_MODEL or "facebook/sam3".
        Loads once per process (thread-safe, cached by source/device/dtype) via core.model.

    engine.encode(plane, preprocessing=Preprocessing(), rgb=None) -> EncodedImage
        Normalises the plane (core.images.to_model_rgb) and caches the vision features in an LRU
        keyed by content hash + model + preprocessing. A second call with the same plane is free.

    engine.segment_text(plane, concepts, *, preprocessing=..., rgb=None,
                        min_score=0.1, mask_threshold=0.5) -> Candidates
        concepts: "nucleus, mitotic cell" or ["nucleus", "mitotic cell"]; one encode, all concepts.
        Returned candidates: score >= min_score, sorted by score (desc), prompts = concept,
        kind = "text", masks at plane size.
    engine.segment_exemplars(plane, boxes_xyxy, box_labels=None, text=None, *, ...) -> Candidates
        boxes in pixel x0, y0, x1, y1; labels 1 positive / 0 negative; kind = "exemplar".
    engine.segment_points(plane, points_xy=None, point_labels=None, box_xyxy=None,
                          multimask=True, ...) -> Candidates
        Tracker head on the SAME cached backbone features; 3 candidates (multimask) with
        iou_scores (also used as scores), kind = "points" (or "box" for a box alone).
    engine.iter_text / iter_exemplars / iter_points(...) -> generator yielding core.progress.Progress
        and returning the Candidates (the plain methods call run_to_end on these).
    engine.stats -> dict of counters: "vision_encodes", "text_encodes", "detector_calls",
        "tracker_calls" (tests count model calls through these).
    engine.source, engine.device

Coordinates: the engine speaks the model's x/y (x = column). napari's (row, col) is flipped in
the napari shell (_layers.py), never here.

How it maps onto transformers (5.x): the checkpoint is loaded once as ``Sam3VideoModel``
(core.model). ``encode`` runs ``detector_model.get_vision_features`` (the ONE backbone pass).
Text and exemplar prompts run ``detector_model(vision_embeds=..., text_embeds=...)``, several
concepts batched by expanding the cached features along the batch dimension (a view, no copy);
scores and masks are post-processed exactly like ``Sam3Processor.post_process_instance_segmentation``.
Clicks and boxes feed the tracker head from the same features through
``Sam3VideoModel.get_vision_features_for_tracker`` and then run the steps of
``Sam3TrackerModel.forward`` (prompt encoder + mask decoder), post-processed like
``Sam3TrackerProcessor.post_process_masks``. tests/test_parity.py checks both against the
documented transformers usage.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .acceleration import apply_cpu_fast_path, encode_vision, heads_autocast
from .cache import FeatureCache, make_key
from .candidates import Candidates, boxes_from_masks
from .errors import Sam3Error
from .images import Preprocessing, content_hash, to_model_rgb, validate_plane
from .progress import Progress, run_to_end
from .prompts import check_boxes, check_points, parse_concepts

DEFAULT_PREPROCESSING = Preprocessing()
TEXT_LENGTH = 32  # Sam3Processor pads every text to 32 tokens
VISUAL_PROMPT = "visual"  # the text Sam3Processor uses for exemplar boxes without text
_MASK_CHUNK_PIXELS = 64 * 1024 * 1024  # float32 elements per upsampling chunk (256 MiB)
_TEXT_CACHE_ITEMS = 256


@dataclass
class EncodedImage:
    """Vision features of one plane under one model + preprocessing (the expensive part).

    ``vision`` is the detector's ``Sam3VisionEncoderOutput`` (backbone tokens + FPN levels);
    ``tracker`` the tracker's image embeddings derived from the same backbone tokens (computed on
    first click, cheap). ``shape`` is the plane's (H, W), ``model_key`` names the model.
    """

    key: str
    model_key: str
    shape: tuple[int, int]
    vision: Any
    seconds: float
    tracker: list | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held by this entry alone (the shared position encodings are not counted)."""
        total = 0
        for t in _tensors(self.vision):
            total += t.element_size() * t.nelement()
        for t in self.tracker or ():
            total += t.element_size() * t.nelement()
        return total


def _tensors(vision) -> list:
    out = []
    if vision is None:
        return out
    if getattr(vision, "last_hidden_state", None) is not None:
        out.append(vision.last_hidden_state)
    out.extend(getattr(vision, "fpn_hidden_states", None) or ())
    return out


class Sam3Engine:
    """Encode once, prompt many times; see the module docstring for the contract."""

    def __init__(self, loaded, cache: FeatureCache | None = None) -> None:
        self._loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.source: str = loaded.source
        self.device = loaded.device
        self.dtype = loaded.dtype
        # CPU: bfloat16 autocast for the vision encoder and the detector heads (tracker stays
        # float32), where the CPU has native bf16
        # ($NAPARI_SAM3_CPU_FAST=off|bf16|bf16-vision|bf16-compile|auto; benchmarks/README.md).
        self.cpu_fast_path: str = apply_cpu_fast_path(self.model, None, self.device)
        # The mode is part of the cache key, so features of different numerics never mix.
        self.model_key: str = loaded.key + (
            "" if self.cpu_fast_path == "off" else f"|cpu-{self.cpu_fast_path}"
        )
        # Run the tracker neck at encode time so the first click costs ~70 ms, not a neck pass.
        self.precompute_tracker: bool = True
        self.image_size: int = loaded.image_size
        self.cache = cache if cache is not None else FeatureCache()
        self._text_cache: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.RLock()
        self._image_pe = None
        self._position_encodings: dict = {}
        self.stats: dict[str, int] = {
            "vision_encodes": 0,
            "text_encodes": 0,
            "detector_calls": 0,
            "tracker_calls": 0,
            "cache_hits": 0,
        }
        self.last_encode_seconds: float | None = None
        self.last_prompt_seconds: float | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def load(cls, source: str | None = None, device: Any = "auto", dtype: Any = None) -> Sam3Engine:
        """The engine of a model, loaded once per process (see `core.model.load_model`)."""
        from .model import load_model

        loaded = load_model(source, device=device, dtype=dtype)
        with _engines_lock:
            if loaded.engine is None:
                loaded.engine = cls(loaded)
            return loaded.engine

    def __repr__(self) -> str:
        return f"Sam3Engine(source={self.source!r}, device={self.device}, dtype={self.dtype})"

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        plane: np.ndarray | EncodedImage,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
    ) -> EncodedImage:
        """Vision features of ``plane`` (cached; a repeat call costs a hash)."""
        return run_to_end(self.iter_encode(plane, preprocessing, rgb))

    def iter_encode(
        self,
        plane: np.ndarray | EncodedImage,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
    ) -> Generator[Progress, None, EncodedImage]:
        if isinstance(plane, EncodedImage):
            if plane.model_key != self.model_key:
                raise Sam3Error(
                    "These image features were computed by another model; encode the image again."
                )
            return plane
        arr = validate_plane(plane, rgb=rgb)  # Sam3Error on bad planes, before hashing
        key = make_key(content_hash(arr), self.model_key, preprocessing, rgb)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            self.last_encode_seconds = 0.0
            return cached
        picture = to_model_rgb(arr, preprocessing, rgb=rgb)
        yield Progress("Encoding the image (SAM3 vision backbone)", 0, 1)
        encoded = self._encode_rgb(picture, key)  # puts it in the cache
        yield Progress("Image encoded", 1, 1)
        return encoded

    def _encode_rgb(self, picture: np.ndarray, key: str) -> EncodedImage:
        import torch

        with self._lock, torch.inference_mode(), _model_errors("encoding the image", self.device):
            # another thread may have encoded the same plane while this one waited for the lock
            done = self.cache.get(key)
            if done is not None:
                return done
            start = time.perf_counter()
            pixel_values = self.pixel_values(picture)
            vision = encode_vision(self.model.detector_model, pixel_values, self.cpu_fast_path)
            self.stats["vision_encodes"] += 1
            vision.hidden_states = None
            vision.attentions = None
            # The sine position encodings depend only on the feature-map shapes: share one copy
            # between all cached images instead of storing ~45 % of every entry again.
            shapes = tuple((tuple(t.shape), t.dtype) for t in vision.fpn_position_encoding)
            shared = self._position_encodings.setdefault(shapes, vision.fpn_position_encoding)
            vision.fpn_position_encoding = shared
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            self.last_encode_seconds = seconds
            encoded = EncodedImage(key, self.model_key, tuple(picture.shape[:2]), vision, seconds)
            self.cache.put(key, encoded, encoded.nbytes)
            if self.precompute_tracker:
                self.tracker_embeddings(encoded)
        return encoded

    def pixel_values(self, picture: np.ndarray):
        """Model input for an (H, W, 3) uint8 picture: the checkpoint's own image processor."""
        inputs = self.processor.image_processor(images=picture, return_tensors="pt")
        return inputs["pixel_values"].to(self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- text features
    def _text_features(self, concepts: Sequence[str]):
        """Pooled text features (N, 32, D) and attention mask (N, 32), cached per concept."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        missing = [c for c in concepts if c not in self._text_cache]
        if missing:
            tokens = self.processor.tokenizer(
                list(missing),
                return_tensors="pt",
                padding="max_length",
                max_length=TEXT_LENGTH,
                truncation=True,
            )
            ids = tokens["input_ids"].to(self.device)
            mask = tokens["attention_mask"].to(self.device)
            out = self.model.detector_model.get_text_features(input_ids=ids, attention_mask=mask)
            self.stats["text_encodes"] += len(missing)
            for i, concept in enumerate(missing):
                self._text_cache[concept] = (out.pooler_output[i : i + 1], mask[i : i + 1])
        for concept in concepts:
            self._text_cache.move_to_end(concept)
        while len(self._text_cache) > _TEXT_CACHE_ITEMS:
            self._text_cache.popitem(last=False)
        feats = torch.cat([self._text_cache[c][0] for c in concepts])
        masks = torch.cat([self._text_cache[c][1] for c in concepts])
        return BaseModelOutputWithPooling(pooler_output=feats), masks

    @staticmethod
    def _expand_vision(vision, n: int):
        """The cached features seen n times along the batch dimension (views, no copies)."""
        if n == 1:
            return vision
        out = type(vision)(
            last_hidden_state=vision.last_hidden_state.expand(
                n, *vision.last_hidden_state.shape[1:]
            ),
            fpn_hidden_states=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(
                t.expand(n, *t.shape[1:]) for t in vision.fpn_position_encoding
            ),
        )
        return out

    # ---------------------------------------------------------------- detector (text, exemplars)
    def segment_text(
        self,
        plane,
        concepts: str | Sequence[str],
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = 0.5,
    ) -> Candidates:
        """Every instance of each concept; one image encode for all concepts."""
        return run_to_end(
            self.iter_text(
                plane,
                concepts,
                preprocessing=preprocessing,
                rgb=rgb,
                min_score=min_score,
                mask_threshold=mask_threshold,
            )
        )

    def iter_text(
        self,
        plane,
        concepts: str | Sequence[str],
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = 0.5,
    ) -> Generator[Progress, None, Candidates]:
        names = parse_concepts(concepts)
        _check_threshold(min_score, "min_score")
        _check_threshold(mask_threshold, "mask_threshold")
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        yield Progress(f"Finding {', '.join(names)}", 1, 2)
        result = self._detect(encoded, names, None, None, min_score, mask_threshold, "text")
        yield Progress(f"Found {len(result)} candidate(s)", 2, 2)
        return result

    def segment_exemplars(
        self,
        plane,
        boxes_xyxy,
        box_labels=None,
        text: str | Sequence[str] | None = None,
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = 0.5,
    ) -> Candidates:
        """Every object like the positive example boxes (and unlike the negative ones)."""
        return run_to_end(
            self.iter_exemplars(
                plane,
                boxes_xyxy,
                box_labels,
                text,
                preprocessing=preprocessing,
                rgb=rgb,
                min_score=min_score,
                mask_threshold=mask_threshold,
            )
        )

    def iter_exemplars(
        self,
        plane,
        boxes_xyxy,
        box_labels=None,
        text: str | Sequence[str] | None = None,
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = 0.5,
    ) -> Generator[Progress, None, Candidates]:
        pieces = [text] if isinstance(text, str) else list(text or [])
        blank = not "".join(str(t) for t in pieces if t is not None).strip()
        names = None if blank else parse_concepts(text)  # boxes alone: the "visual" prompt
        _check_threshold(min_score, "min_score")
        _check_threshold(mask_threshold, "mask_threshold")
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        boxes, labels = check_boxes(boxes_xyxy, box_labels, encoded.shape)
        if not (labels == 1).any() and names is None:
            raise Sam3Error(
                "Only negative example boxes were given; add at least one positive box (label 1) "
                "or a text prompt."
            )
        yield Progress("Finding objects like the examples", 1, 2)
        result = self._detect(
            encoded, names or [VISUAL_PROMPT], boxes, labels, min_score, mask_threshold, "exemplar"
        )
        if names is None:
            result = Candidates(
                result.masks,
                result.scores,
                result.boxes,
                ["exemplar"] * len(result),
                "exemplar",
                None,
                result.meta,
            )
        yield Progress(f"Found {len(result)} candidate(s)", 2, 2)
        return result

    def _detect(
        self,
        encoded: EncodedImage,
        concepts: list[str],
        boxes: np.ndarray | None,
        labels: np.ndarray | None,
        min_score: float,
        mask_threshold: float,
        kind: str,
    ) -> Candidates:
        import torch

        n = len(concepts)
        h, w = encoded.shape
        start = time.perf_counter()
        step = "finding objects"
        # bfloat16 heads on CPUs with native bf16 (~0.75x; every further concept pays them)
        heads = heads_autocast(self.device, self.cpu_fast_path)
        with self._lock, torch.inference_mode(), heads, _model_errors(step, self.device):
            text_embeds, attention_mask = self._text_features(concepts)
            kwargs = {}
            if boxes is not None:
                kwargs["input_boxes"] = _boxes_cxcywh(boxes, (h, w), n).to(self.device, self.dtype)
                kwargs["input_boxes_labels"] = (
                    torch.as_tensor(labels, dtype=torch.long).expand(n, -1).to(self.device)
                )
            out = self.model.detector_model(
                vision_embeds=self._expand_vision(encoded.vision, n),
                text_embeds=text_embeds,
                attention_mask=attention_mask,
                **kwargs,
            )
            self.stats["detector_calls"] += 1
            parts = [
                _instances(
                    out.pred_logits[i],
                    None if out.presence_logits is None else out.presence_logits[i],
                    out.pred_boxes[i],
                    out.pred_masks[i],
                    (h, w),
                    min_score,
                    mask_threshold,
                    concepts[i],
                    kind,
                )
                for i in range(n)
            ]
        self.last_prompt_seconds = time.perf_counter() - start
        # One concept: already sorted by _instances, no copy; several: merge by score.
        result = parts[0] if n == 1 else Candidates.concatenate(parts, kind=kind, by_score=True)
        result.meta.update(self._meta(encoded, min_score=min_score, mask_threshold=mask_threshold))
        return result

    # ---------------------------------------------------------------- tracker (clicks, box)
    def segment_points(
        self,
        plane,
        points_xy=None,
        point_labels=None,
        box_xyxy=None,
        multimask: bool = True,
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        mask_threshold: float = 0.0,
        min_score: float | None = None,
    ) -> Candidates:
        """One object from clicks (1 object / 0 background) and/or a box: 3 candidates if multimask."""
        return run_to_end(
            self.iter_points(
                plane,
                points_xy,
                point_labels,
                box_xyxy,
                multimask,
                preprocessing=preprocessing,
                rgb=rgb,
                mask_threshold=mask_threshold,
                min_score=min_score,
            )
        )

    def iter_points(
        self,
        plane,
        points_xy=None,
        point_labels=None,
        box_xyxy=None,
        multimask: bool = True,
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        mask_threshold: float = 0.0,
        min_score: float | None = None,
    ) -> Generator[Progress, None, Candidates]:
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        points, labels = check_points(points_xy, point_labels, encoded.shape)
        box = None
        if box_xyxy is not None and np.asarray(box_xyxy).size:
            boxes, _ = check_boxes(box_xyxy, None, encoded.shape)
            if len(boxes) != 1:
                raise Sam3Error("Give one box per object for a click/box prompt.")
            box = boxes[0]
        if points is None and box is None:
            raise Sam3Error("Click on the object (or draw a box around it) first.")
        kind = "points" if points is not None else "box"
        yield Progress("Segmenting the clicked object", 1, 2)
        result = self._track(encoded, points, labels, box, multimask, mask_threshold, kind)
        if min_score is not None:
            result = result.filter(min_score)
        yield Progress("Done", 2, 2)
        return result

    def tracker_embeddings(self, encoded: EncodedImage) -> list:
        """The tracker's image embeddings from the shared backbone tokens (cached on ``encoded``)."""
        import torch

        if encoded.tracker is None:
            with self._lock, torch.inference_mode():
                tracker = self.model.tracker_model
                feats, _ = self.model.get_vision_features_for_tracker(vision_embeds=encoded.vision)
                feats = list(feats)
                feats[-1] = feats[-1] + tracker.no_memory_embedding
                embeddings = [
                    f.permute(1, 2, 0).reshape(1, -1, *size)
                    for f, size in zip(feats, tracker.backbone_feature_sizes, strict=False)
                ]
                encoded.tracker = embeddings
                if encoded.key in self.cache:  # count the extra memory against the cache bound
                    self.cache.put(encoded.key, encoded, encoded.nbytes)
        return encoded.tracker

    def _track(self, encoded, points, labels, box, multimask, mask_threshold, kind) -> Candidates:
        import torch

        h, w = encoded.shape
        scale = torch.tensor([self.image_size / w, self.image_size / h], dtype=torch.float32)
        start = time.perf_counter()
        embeddings = self.tracker_embeddings(encoded)
        with self._lock, torch.inference_mode(), _model_errors("segmenting", self.device):
            tracker = self.model.tracker_model
            input_points = input_labels = input_boxes = None
            if points is not None:
                pts = torch.as_tensor(points, dtype=torch.float32) * scale
                input_points = pts[None, None].to(self.device)  # float32, as the processor gives
                input_labels = torch.as_tensor(labels, dtype=torch.int64)[None, None].to(
                    self.device
                )
            if box is not None:
                b = torch.as_tensor(box, dtype=torch.float32).reshape(2, 2) * scale
                input_boxes = b.reshape(1, 1, 4).to(self.device)
            if self._image_pe is None:
                self._image_pe = tracker.get_image_wide_positional_embeddings()
            sparse, dense = tracker.prompt_encoder(
                input_points=input_points,
                input_labels=input_labels,
                input_boxes=input_boxes,
                input_masks=None,
            )
            low_res, iou, _, object_logits = tracker.mask_decoder(
                image_embeddings=embeddings[-1],
                image_positional_embeddings=self._image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                high_resolution_features=embeddings[:-1],
            )
            self.stats["tracker_calls"] += 1
            logits = low_res[0, 0].float()  # (K, h', w')
            iou_scores = iou[0, 0].float().cpu().numpy()
            masks = _upsample(logits, (h, w), mask_threshold, sigmoid=False)
            object_score = float(torch.sigmoid(object_logits.float().reshape(-1)[0]))
        self.last_prompt_seconds = time.perf_counter() - start
        prompt = "points" if kind == "points" else "box"
        result = Candidates(
            masks, iou_scores, boxes_from_masks(masks), [prompt] * len(masks), kind, iou_scores
        ).sorted_by_score()
        result.meta.update(
            self._meta(encoded, mask_threshold=mask_threshold, object_score=object_score)
        )
        return result

    # ---------------------------------------------------------------- misc
    def _meta(self, encoded: EncodedImage, **extra) -> dict:
        return {
            "source": self.source,
            "device": str(self.device),
            "encode_seconds": encoded.seconds,
            "prompt_seconds": self.last_prompt_seconds,
            **extra,
        }

    def clear_cache(self) -> None:
        """Forget cached image and text features."""
        self.cache.clear()
        with self._lock:
            self._text_cache.clear()

    def reset_stats(self) -> None:
        for k in self.stats:
            self.stats[k] = 0


_engines_lock = threading.Lock()


@contextmanager
def _model_errors(step: str, device):
    """Out-of-memory during a model step becomes a Sam3Error that says what to do."""
    import torch

    try:
        yield
    except _oom(torch) as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise Sam3Error(
            f"Out of {device.type.upper()} memory while {step}. Close other programs using it, "
            "clear the embedding cache, split the image into tiles, or use device='cpu'."
        ) from exc


def _check_threshold(value: float, name: str) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise Sam3Error(f"{name} must lie between 0 and 1, got {value}.")


def _boxes_cxcywh(boxes: np.ndarray, shape: tuple[int, int], n: int):
    """Pixel xyxy -> normalised cx, cy, w, h as Sam3Processor does, repeated for n prompts."""
    import torch

    h, w = shape
    b = torch.as_tensor(boxes, dtype=torch.float32).clone()
    b[:, 0::2] /= w
    b[:, 1::2] /= h
    cxcywh = torch.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
        dim=-1,
    )
    return cxcywh[None].expand(n, -1, -1)


def _instances(
    logits, presence, boxes, mask_logits, shape, min_score, mask_threshold, prompt, kind
):
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
    masks = _upsample(mask_logits[keep].float(), shape, mask_threshold, sigmoid=True)
    sel = scores[keep].cpu().numpy()
    return Candidates(masks, sel, boxes_from_masks(masks), [prompt] * len(sel), kind)


def _upsample(mask_logits, shape, threshold: float, sigmoid: bool) -> np.ndarray:
    """(K, h, w) logits -> (K, H, W) bool at plane size, bilinear (align_corners=False), chunked."""
    import torch.nn.functional as F

    k = mask_logits.shape[0]
    h, w = shape
    out = np.zeros((k, h, w), dtype=bool)
    step = max(1, _MASK_CHUNK_PIXELS // max(1, h * w))
    for i in range(0, k, step):
        chunk = mask_logits[i : i + step]
        if sigmoid:
            chunk = chunk.sigmoid()
        up = F.interpolate(chunk[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        out[i : i + step] = (up > threshold).cpu().numpy()
    return out


def _oom(torch):
    """torch.OutOfMemoryError (torch >= 2.5) or its older CUDA-only name."""
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


__all__ = ["EncodedImage", "Sam3Engine"]
