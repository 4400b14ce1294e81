"""Exemplar boxes drawn on one image, kept as SAM3 prompt tokens and used on other images.

How SAM3 encodes an exemplar box (``Sam3Model.forward`` in transformers): its geometry encoder
ROI-pools the image's own FPN features inside the box, adds a projection of the box coordinates,
their sine position and a positive/negative label embedding, appends a CLS token and lets these
tokens cross-attend to the same image's features. The result is concatenated after the text
tokens and the detector reads only that concatenation (``combined_prompt_features`` and its
mask) from then on. So the exemplar's meaning lives in those tokens: computed on image A they
say "objects like the one in this box of A", whichever image the detector then looks at.

`geometry_tokens` runs the encoder exactly as ``forward`` does; `ExemplarPrompt` keeps its
output (a few KB); `prompt_tokens` rebuilds the concatenation the detector expects, so running
the detector on image A with A's tokens reproduces the ordinary exemplar call (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam3.core.errors import Sam3Error


@dataclass
class ExemplarPrompt:
    """Exemplar tokens computed on a source image, reusable on any image of the same model.

    Attributes
    ----------
    geometry : (n_concepts, n_boxes + 1, D) geometry-encoder output on the source image.
    geometry_mask : (n_concepts, n_boxes + 1) bool, True = a real token.
    concepts : the text concepts the tokens follow (``["visual"]`` for boxes alone).
    names : the prompt name each concept's candidates get ("exemplar" for boxes alone).
    model_key : the engine's model key; another model's engine refuses the prompt.
    boxes, box_labels : the pixel boxes (x0, y0, x1, y1) and labels on the source image.
    source : the source image's cache key (content hash + preprocessing) and its (H, W).
    """

    geometry: Any
    geometry_mask: Any
    concepts: list[str]
    names: list[str]
    model_key: str
    boxes: np.ndarray
    box_labels: np.ndarray
    source_key: str = ""
    source_shape: tuple[int, int] = (0, 0)
    meta: dict = field(default_factory=dict)

    @property
    def n_boxes(self) -> int:
        return int(len(self.boxes))

    def __repr__(self) -> str:
        return (
            f"ExemplarPrompt({self.n_boxes} box(es) from a {self.source_shape[1]}x"
            f"{self.source_shape[0]} image, concepts={self.concepts})"
        )


def merge_prompts(prompts: list[ExemplarPrompt]) -> ExemplarPrompt:
    """Exemplars from several images as one prompt (their geometry tokens side by side)."""
    import torch

    if not prompts:
        raise Sam3Error("No exemplar prompt to merge.")
    first = prompts[0]
    for other in prompts[1:]:
        if other.concepts != first.concepts or other.model_key != first.model_key:
            raise Sam3Error(
                "Exemplars from several images must use the same text and the same model."
            )
    if len(prompts) == 1:
        return first
    return ExemplarPrompt(
        geometry=torch.cat([p.geometry for p in prompts], dim=1),
        geometry_mask=torch.cat([p.geometry_mask for p in prompts], dim=1),
        concepts=list(first.concepts),
        names=list(first.names),
        model_key=first.model_key,
        boxes=np.concatenate([p.boxes for p in prompts]),
        box_labels=np.concatenate([p.box_labels for p in prompts]),
        source_key="+".join(p.source_key for p in prompts),
        source_shape=first.source_shape,
        meta={"sources": len(prompts)},
    )


def geometry_tokens(detector, vision, input_boxes, input_boxes_labels):
    """The geometry encoder on ``vision`` as ``Sam3Model.forward`` runs it: (tokens, mask).

    ``vision`` is the (expanded) cached vision output, ``input_boxes`` normalised cx, cy, w, h
    (n, k, 4) and ``input_boxes_labels`` (n, k) as `detector_inputs.exemplar_inputs` gives them.
    """
    import torch

    fpn = vision.fpn_hidden_states[:-1]  # forward drops the last level before the prompts
    pos = vision.fpn_position_encoding[:-1]
    labels = torch.where(input_boxes_labels == -10, 0, input_boxes_labels)
    out = detector.geometry_encoder(
        box_embeddings=input_boxes,
        box_mask=input_boxes_labels != -10,
        box_labels=labels,
        img_feats=fpn,
        img_pos_embeds=pos,
    )
    return out.last_hidden_state, out.attention_mask


def prompt_tokens(text_embeds, text_mask, geometry, geometry_mask):
    """Text + geometry tokens and their mask, concatenated as ``Sam3Model.forward`` does.

    Returns what the detector takes as ``text_embeds`` (pooler output = all prompt tokens) and
    ``attention_mask``; with no boxes passed, forward then uses them unchanged.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    text = text_embeds.pooler_output
    n = geometry.shape[0]
    if text.shape[0] == 1 and n > 1:
        text = text.repeat(n, 1, 1)
        text_mask = text_mask.repeat(n, 1)
    tokens = torch.cat([text, geometry.to(text.device)], dim=1)
    mask = torch.cat([text_mask.bool(), geometry_mask.to(text_mask.device).bool()], dim=1)
    return BaseModelOutputWithPooling(pooler_output=tokens), mask


__all__ = ["ExemplarPrompt", "geometry_tokens", "merge_prompts", "prompt_tokens"]
