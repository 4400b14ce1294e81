"""The engine's exemplars-across-images API (a mixin of `Sam3Engine`, kept apart for size).

    prompt = engine.exemplar_prompt(image_a, [[x0, y0, x1, y1]])    # encodes A (cached)
    found = engine.segment_with(image_b, prompt)                    # B conditioned on A's box

Why this is faithful to SAM3: core.sam3.exemplar_prompt. Costs per target image what a text
prompt costs (one encode of B, cached, plus one detector pass); the geometry encoder runs once,
on A.
"""

from __future__ import annotations

from collections.abc import Generator

from napari_sam3.core.defaults import MASK_THRESHOLD
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.progress import Progress, to_end
from napari_sam3.core.prompts import check_boxes
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.sam3.acceleration import heads_autocast
from napari_sam3.core.sam3.detections import check_threshold
from napari_sam3.core.sam3.detector_inputs import exemplar_concepts, exemplar_inputs
from napari_sam3.core.sam3.encoded_image import expand_vision
from napari_sam3.core.sam3.exemplar_prompt import ExemplarPrompt, geometry_tokens, merge_prompts
from napari_sam3.core.sam3.load_errors import model_errors

VISUAL_PROMPT = "visual"  # the text Sam3Processor uses for exemplar boxes without text
DEFAULT_PREPROCESSING = Preprocessing()


class ExemplarTransfer:
    """`exemplar_prompt` / `segment_with` (and their ``iter_`` generators) for `Sam3Engine`."""

    def iter_exemplar_prompt(
        self,
        plane,
        boxes_xyxy,
        box_labels=None,
        text=None,
        *,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
    ) -> Generator[Progress, None, ExemplarPrompt]:
        """The exemplar tokens of ``boxes_xyxy`` (pixel x0, y0, x1, y1) on ``plane``."""
        import torch

        names = exemplar_concepts(text)
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        boxes, labels = checked_exemplars(names, boxes_xyxy, box_labels, encoded.shape)
        concepts = names or [VISUAL_PROMPT]
        n = len(concepts)
        yield Progress("Encoding the example boxes", 1, 2)
        heads = heads_autocast(self.device, self.cpu_fast_path)
        with (
            self._lock,
            torch.inference_mode(),
            heads,
            model_errors("encoding the examples", self.device),
        ):
            self._text_features(concepts)  # cached now, read again on every target image
            kwargs = exemplar_inputs(boxes, labels, encoded.shape, n, self.device, self.dtype)
            geometry, mask = geometry_tokens(
                self.model.detector_model,
                expand_vision(encoded.vision, n),
                kwargs["input_boxes"],
                kwargs["input_boxes_labels"],
            )
        yield Progress("Example boxes encoded", 2, 2)
        return ExemplarPrompt(
            geometry=geometry,
            geometry_mask=mask,
            concepts=concepts,
            names=list(names) if names else ["exemplar"],
            model_key=self.model_key,
            boxes=boxes,
            box_labels=labels,
            source_key=encoded.key,
            source_shape=tuple(encoded.shape),
        )

    exemplar_prompt = to_end(iter_exemplar_prompt)

    def iter_segment_with(
        self,
        plane,
        prompt: ExemplarPrompt,
        *,
        boxes_xyxy=None,
        box_labels=None,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
        rgb: bool | None = None,
        min_score: float = 0.1,
        mask_threshold: float = MASK_THRESHOLD,
    ) -> Generator[Progress, None, Candidates]:
        """Every object in ``plane`` like the exemplars of ``prompt`` (drawn on another image).

        ``boxes_xyxy`` / ``box_labels``: more exemplars drawn on ``plane`` itself, added to them.
        """
        if not isinstance(prompt, ExemplarPrompt):
            raise Sam3Error("segment_with needs the exemplar prompt from engine.exemplar_prompt().")
        if prompt.model_key != self.model_key:
            raise Sam3Error(
                "These exemplars were encoded by another model; draw them again with this model."
            )
        check_threshold(min_score, "min_score")
        check_threshold(mask_threshold, "mask_threshold")
        encoded = yield from self.iter_encode(plane, preprocessing, rgb)
        if boxes_xyxy is not None and len(boxes_xyxy):
            text = None if prompt.names == ["exemplar"] else prompt.concepts
            own = yield from self.iter_exemplar_prompt(
                encoded, boxes_xyxy, box_labels, text, preprocessing=preprocessing, rgb=rgb
            )
            prompt = merge_prompts([prompt, own])
        yield Progress("Finding objects like the examples", 1, 2)
        result = self._detect(
            encoded, prompt.concepts, None, None, min_score, mask_threshold, "exemplar", prompt
        )
        if prompt.names != prompt.concepts:  # boxes alone
            result = as_exemplar(result)
        result.meta.update(exemplar_source=prompt.source_key, exemplar_boxes=prompt.n_boxes)
        yield Progress(f"Found {len(result)} candidate(s)", 2, 2)
        return result

    segment_with = to_end(iter_segment_with)


def checked_exemplars(names, boxes_xyxy, box_labels, shape) -> tuple:
    """Exemplar boxes and labels on an image of ``shape`` (`check_boxes`); negative boxes alone
    need a text prompt (``names``)."""
    boxes, labels = check_boxes(boxes_xyxy, box_labels, shape)
    if not (labels == 1).any() and names is None:
        raise Sam3Error(
            "Only negative example boxes were given; add at least one positive box (label 1) "
            "or a text prompt."
        )
    return boxes, labels


def as_exemplar(result: Candidates) -> Candidates:
    """Candidates of exemplar boxes alone: their prompt is "exemplar", not the model's
    `VISUAL_PROMPT` text."""
    return Candidates(
        result.masks,
        result.scores,
        result.boxes,
        ["exemplar"] * len(result),
        "exemplar",
        None,
        result.meta,
    )
