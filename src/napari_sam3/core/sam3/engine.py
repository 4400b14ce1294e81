"""One object per loaded SAM3 model: encode an image once, prompt it many times.

Public API (other modules code against these names; they stay stable):

    engine = Sam3Engine.load(source=None, device="auto", dtype=None)
        source: hub id or local folder; None -> $NAPARI_SAM3_MODEL or "facebook/sam3".
        Loads once per process (thread-safe, cached by source/device/dtype) via core.sam3.loading.

    engine.encode(plane, preprocessing=Preprocessing(), rgb=None) -> EncodedImage
        Normalises the plane (core.images.to_model_rgb) and caches the vision features in an LRU
        keyed by content hash + model + preprocessing. A second call with the same plane is free.

    engine.segment_text(plane, concepts, *, preprocessing=..., rgb=None,
                        min_score=0.1, mask_threshold=MASK_THRESHOLD) -> Candidates
        concepts: "nucleus, mitotic cell" or ["nucleus", "mitotic cell"]; one encode, all concepts.
        Returned candidates: score >= min_score, sorted by score (desc), prompts = concept,
        kind = "text", masks at plane size.
    engine.segment_exemplars(plane, boxes_xyxy, box_labels=None, text=None, *, ...) -> Candidates
        boxes in pixel x0, y0, x1, y1; labels 1 positive / 0 negative; kind = "exemplar".
    engine.exemplar_prompt(plane_a, boxes_xyxy, box_labels=None, text=None) -> ExemplarPrompt
    engine.segment_with(plane_b, prompt, *, boxes_xyxy=None, ...) -> Candidates
        Exemplars drawn on image A used on image B: A's exemplar tokens condition B's detector
        (core.sam3.exemplar_prompt explains why that is how SAM3 encodes exemplars).
    engine.segment_points(plane, points_xy=None, point_labels=None, box_xyxy=None,
                          multimask=True, ...) -> Candidates
        Tracker head on the SAME cached backbone features; 3 candidates (multimask) with
        iou_scores (also used as scores), kind = "points" (or "box" for a box alone).
    engine.iter_text / iter_exemplars / iter_points(...) -> generator yielding core.progress.Progress
        and returning the Candidates (the plain methods are their `core.progress.to_end` twins).
    engine.stats -> dict of counters: "vision_encodes", "text_encodes", "detector_calls",
        "tracker_calls" (tests count model calls through these).
    engine.source, engine.device

Coordinates: the engine speaks the model's x/y (x = column). napari's (row, col) is flipped in
the napari shell (_napari/prompt_layers.py, _napari/layers.py), never here.

How it maps onto transformers (5.x): the checkpoint is loaded once as ``Sam3VideoModel``
(core.sam3.loading). ``encode`` runs ``detector_model.get_vision_features`` (the ONE backbone pass).
Text and exemplar prompts run ``detector_model(vision_embeds=..., text_embeds=...)``, several
concepts batched by expanding the cached features along the batch dimension (a view, no copy;
core.sam3.detector_inputs prepares the prompts). Clicks and boxes feed the tracker head from the
same features (core.sam3.tracker_inputs). Both are post-processed like the transformers processors
(core.sam3.detections); tests/test_parity.py checks them against the documented transformers usage.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_sam3.core.defaults import MASK_THRESHOLD
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing, content_hash, to_model_rgb, validate_plane
from napari_sam3.core.progress import Progress, to_end
from napari_sam3.core.prompts import parse_concepts
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.sam3.acceleration import apply_cpu_fast_path, encode_vision, heads_autocast
from napari_sam3.core.sam3.adapter import AdapterHooks
from napari_sam3.core.sam3.detections import (
    check_threshold,
    detector_candidates,
    tracker_candidates,
    tracker_masks,
)
from napari_sam3.core.sam3.detector_inputs import (
    TextFeatureCache,
    encode_texts,
    exemplar_concepts,
    exemplar_inputs,
)
from napari_sam3.core.sam3.encoded_image import EncodedImage, expand_vision, slim_for_cache
from napari_sam3.core.sam3.engine_exemplars import (
    VISUAL_PROMPT,
    ExemplarTransfer,
    as_exemplar,
    checked_exemplars,
)
from napari_sam3.core.sam3.exemplar_prompt import prompt_tokens
from napari_sam3.core.sam3.feature_cache import FeatureCache, make_key
from napari_sam3.core.sam3.load_errors import model_errors
from napari_sam3.core.sam3.tracker_inputs import (
    click_prompt,
    decode,
    single_image_embeddings,
    tracker_inputs,
    tracker_video_features,
)

DEFAULT_PREPROCESSING = Preprocessing()


class Sam3Engine(ExemplarTransfer, AdapterHooks):
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
        self._text_cache = TextFeatureCache()
        self._lock = threading.RLock()
        self._thread_flags = threading.local()  # per-thread: skipping_tracker_neck
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
    def load(
        cls, source: str | None = None, device: Any = "auto", dtype: Any = None, adapter=None
    ) -> Sam3Engine:
        """The engine of a model, loaded once per process (see `core.sam3.loading.load_model`).

        ``adapter``: an adapter file (or `Sam3Adapter`) to use from now on (`set_adapter`);
        None leaves the engine's current adapter as it is.
        """
        from napari_sam3.core.sam3.loading import load_model

        loaded = load_model(source, device=device, dtype=dtype)
        with _engines_lock:
            if loaded.engine is None:
                loaded.engine = cls(loaded)
            engine = loaded.engine
        if adapter is not None:
            engine.set_adapter(adapter)
        return engine

    def __repr__(self) -> str:
        return f"Sam3Engine(source={self.source!r}, device={self.device}, dtype={self.dtype})"

    # ---------------------------------------------------------------- encode
    def iter_encode(
        self,
        plane: np.ndarray | EncodedImage,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
    ) -> Generator[Progress, None, EncodedImage]:
        """Vision features of ``plane`` (cached; a repeat call costs a hash)."""
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

    encode = to_end(iter_encode)

    def _encode_rgb(self, picture: np.ndarray, key: str) -> EncodedImage:
        import torch

        with self._lock, torch.inference_mode(), model_errors("encoding the image", self.device):
            # another thread may have encoded the same plane while this one waited for the lock
            done = self.cache.get(key)
            if done is not None:
                return done
            start = time.perf_counter()
            pixel_values = self.pixel_values(picture)
            vision = encode_vision(self.model.detector_model, pixel_values, self.cpu_fast_path)
            self.stats["vision_encodes"] += 1
            slim_for_cache(vision, self._position_encodings)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            self.last_encode_seconds = seconds
            encoded = EncodedImage(key, self.model_key, tuple(picture.shape[:2]), vision, seconds)
            self.cache.put(key, encoded, encoded.nbytes)
            if self.precompute_tracker and not getattr(self._thread_flags, "skip_neck", False):
                self.tracker_embeddings(encoded)
        return encoded

    @contextlib.contextmanager
    def skipping_tracker_neck(self):
        """Images encoded meanwhile by this thread skip the tracker neck (~5 % of an encode).

        For images nobody clicks on, such as the tiles of a SAM3 count; a click on one of them
        later still works (the neck then runs on the first click).
        """
        before = getattr(self._thread_flags, "skip_neck", False)
        self._thread_flags.skip_neck = True
        try:
            yield
        finally:
            self._thread_flags.skip_neck = before

    def pixel_values(self, picture: np.ndarray):
        """Model input for an (H, W, 3) uint8 picture: the checkpoint's own image processor."""
        inputs = self.processor.image_processor(images=picture, return_tensors="pt")
        return inputs["pixel_values"].to(self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- text features
    def _text_features(self, concepts: Sequence[str]):
        """Pooled text features (N, 32, D) and attention mask (N, 32), cached per concept."""
        missing = self._text_cache.missing(concepts)
        if missing:
            tokenizer, detector = self.processor.tokenizer, self.model.detector_model
            pooled, mask = encode_texts(tokenizer, detector, missing, self.device)
            self.stats["text_encodes"] += len(missing)
            self._text_cache.add(missing, pooled, mask)
        return self._text_cache.batch(concepts)

    # ---------------------------------------------------------------- detector (text, exemplars)
    def iter_text(
        self,
        plane,
        concepts: str | Sequence[str],
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = MASK_THRESHOLD,
    ) -> Generator[Progress, None, Candidates]:
        """Every instance of each concept; one image encode for all concepts."""
        names = parse_concepts(concepts)
        check_threshold(min_score, "min_score")
        check_threshold(mask_threshold, "mask_threshold")
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        yield Progress(f"Finding {', '.join(names)}", 1, 2)
        result = self._detect(encoded, names, None, None, min_score, mask_threshold, "text")
        yield Progress(f"Found {len(result)} candidate(s)", 2, 2)
        return result

    segment_text = to_end(iter_text)

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
        mask_threshold: float = MASK_THRESHOLD,
    ) -> Generator[Progress, None, Candidates]:
        """Every object like the positive example boxes (and unlike the negative ones)."""
        names = exemplar_concepts(text)  # None for boxes alone: the "visual" prompt
        check_threshold(min_score, "min_score")
        check_threshold(mask_threshold, "mask_threshold")
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        boxes, labels = checked_exemplars(names, boxes_xyxy, box_labels, encoded.shape)
        yield Progress("Finding objects like the examples", 1, 2)
        result = self._detect(
            encoded, names or [VISUAL_PROMPT], boxes, labels, min_score, mask_threshold, "exemplar"
        )
        if names is None:
            result = as_exemplar(result)
        yield Progress(f"Found {len(result)} candidate(s)", 2, 2)
        return result

    segment_exemplars = to_end(iter_exemplars)

    def _detect(
        self,
        encoded: EncodedImage,
        concepts: list[str],
        boxes: np.ndarray | None,
        labels: np.ndarray | None,
        min_score: float,
        mask_threshold: float,
        kind: str,
        prompt=None,
    ) -> Candidates:
        """Run the detector; ``prompt`` (an `ExemplarPrompt`) replaces the boxes by its tokens."""
        import torch

        n = len(concepts)
        h, w = encoded.shape
        start = time.perf_counter()
        step = "finding objects"
        # bfloat16 heads on CPUs with native bf16 (~0.75x; every further concept pays them)
        heads = heads_autocast(self.device, self.cpu_fast_path)
        with self._lock, torch.inference_mode(), heads, model_errors(step, self.device):
            text_embeds, attention_mask = self._text_features(concepts)
            kwargs = exemplar_inputs(boxes, labels, (h, w), n, self.device, self.dtype)
            if prompt is not None:  # tokens from another image: text + its geometry, no boxes
                text_embeds, attention_mask = prompt_tokens(
                    text_embeds, attention_mask, prompt.geometry, prompt.geometry_mask
                )
            out = self.model.detector_model(
                vision_embeds=expand_vision(encoded.vision, n),
                text_embeds=text_embeds,
                attention_mask=attention_mask,
                **kwargs,
            )
            self.stats["detector_calls"] += 1
            parts = detector_candidates(out, concepts, (h, w), min_score, mask_threshold, kind)
        self.last_prompt_seconds = time.perf_counter() - start
        # One concept: already sorted by score, no copy; several: merge by score.
        result = parts[0] if n == 1 else Candidates.concatenate(parts, kind=kind, by_score=True)
        result.meta.update(self._meta(encoded, min_score=min_score, mask_threshold=mask_threshold))
        return result

    # ---------------------------------------------------------------- tracker (clicks, box)
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
        """One object from clicks (1 object / 0 background) and/or a box: 3 candidates if multimask."""
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        points, labels, box, kind = click_prompt(points_xy, point_labels, box_xyxy, encoded.shape)
        yield Progress("Segmenting the clicked object", 1, 2)
        result = self._track(encoded, points, labels, box, multimask, mask_threshold, kind)
        if min_score is not None:
            result = result.filter(min_score)
        yield Progress("Done", 2, 2)
        return result

    segment_points = to_end(iter_points)

    def tracker_embeddings(self, encoded: EncodedImage) -> list:
        """The tracker's image embeddings from the shared backbone tokens (cached on ``encoded``)."""
        import torch

        if encoded.tracker is None:
            feats, _ = self.tracker_video_features(encoded)
            with self._lock, torch.inference_mode():
                encoded.tracker = single_image_embeddings(self.model.tracker_model, feats)
                if encoded.key in self.cache:  # count the extra memory against the cache bound
                    self.cache.put(encoded.key, encoded, encoded.nbytes)
        return encoded.tracker

    def tracker_video_features(self, encoded: EncodedImage) -> tuple[list, list]:
        """The tracker neck output of ``encoded`` in the video tracker's layout (cached on it).

        (features, position encodings); the encodings depend only on the shapes and are shared.
        """
        import torch

        with self._lock, torch.inference_mode():
            if encoded.tracker_video is None:
                feats, pos = tracker_video_features(self.model, encoded.vision)
                encoded.tracker_video = feats
                self._position_encodings.setdefault(_tracker_key(feats), pos)
                if encoded.key in self.cache:  # count the extra memory against the cache bound
                    self.cache.put(encoded.key, encoded, encoded.nbytes)
            pos = self._position_encodings.get(_tracker_key(encoded.tracker_video))
            if pos is None:  # another engine's features: compute the encodings again
                _, pos = tracker_video_features(self.model, encoded.vision)
        return encoded.tracker_video, pos

    def _track(self, encoded, points, labels, box, multimask, mask_threshold, kind) -> Candidates:
        import torch

        h, w = encoded.shape
        scale = torch.tensor([self.image_size / w, self.image_size / h], dtype=torch.float32)
        start = time.perf_counter()
        embeddings = self.tracker_embeddings(encoded)
        with self._lock, torch.inference_mode(), model_errors("segmenting", self.device):
            tracker = self.model.tracker_model
            inputs = tracker_inputs(points, labels, box, scale, self.device)
            if self._image_pe is None:
                self._image_pe = tracker.get_image_wide_positional_embeddings()
            low_res, iou, object_logits = decode(
                tracker, embeddings, self._image_pe, inputs, multimask
            )
            self.stats["tracker_calls"] += 1
            masks, iou_scores, object_score = tracker_masks(
                low_res, iou, object_logits, (h, w), mask_threshold
            )
        self.last_prompt_seconds = time.perf_counter() - start
        result = tracker_candidates(masks, iou_scores, kind)
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


def _tracker_key(feats) -> tuple:
    """Where the shared tracker position encodings of features of these shapes are kept."""
    return ("tracker", *(tuple(t.shape) for t in feats))


__all__ = ["EncodedImage", "Sam3Engine"]
