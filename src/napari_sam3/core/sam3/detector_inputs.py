"""Text and exemplar-box prompts in the detector's terms, as Sam3Processor prepares them.

Text concepts are tokenised to 32 tokens and encoded once per concept (an LRU keeps them);
exemplar boxes go from pixel x0, y0, x1, y1 to normalised cx, cy, w, h.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sam3.core.prompts import concepts_typed

TEXT_LENGTH = 32  # Sam3Processor pads every text to 32 tokens
TEXT_CACHE_ITEMS = 256


def encode_texts(tokenizer, detector, concepts: Sequence[str], device):
    """Pooled text features (N, 32, D) and attention mask (N, 32) of ``concepts``, one pass."""
    tokens = tokenizer(
        list(concepts),
        return_tensors="pt",
        padding="max_length",
        max_length=TEXT_LENGTH,
        truncation=True,
    )
    ids = tokens["input_ids"].to(device)
    mask = tokens["attention_mask"].to(device)
    out = detector.get_text_features(input_ids=ids, attention_mask=mask)
    return out.pooler_output, mask


class TextFeatureCache:
    """Text features per concept, least recently used dropped beyond ``max_items``.

    Not locked: the engine calls it under its own lock.
    """

    def __init__(self, max_items: int = TEXT_CACHE_ITEMS) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def missing(self, concepts: Sequence[str]) -> list[str]:
        """The concepts that still need a text encode, in order."""
        return [c for c in concepts if c not in self._items]

    def add(self, concepts: Sequence[str], pooled, mask) -> None:
        """Store row i of ``pooled`` / ``mask`` under concepts[i]."""
        for i, concept in enumerate(concepts):
            self._items[concept] = (pooled[i : i + 1], mask[i : i + 1])

    def batch(self, concepts: Sequence[str]):
        """The cached features of ``concepts`` stacked as the detector's text inputs."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        for concept in concepts:
            self._items.move_to_end(concept)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        feats = torch.cat([self._items[c][0] for c in concepts])
        masks = torch.cat([self._items[c][1] for c in concepts])
        return BaseModelOutputWithPooling(pooler_output=feats), masks

    def clear(self) -> None:
        self._items.clear()


def exemplar_concepts(text: str | Sequence[str] | None) -> list[str] | None:
    """The concepts to pair with exemplar boxes; None when the text is blank (boxes alone)."""
    return concepts_typed(text) or None


def exemplar_inputs(boxes, labels, shape, n: int, device, dtype) -> dict:
    """The detector's box keyword arguments for n concepts (none without boxes)."""
    import torch

    if boxes is None:
        return {}
    return {
        "input_boxes": boxes_cxcywh(boxes, shape, n).to(device, dtype),
        "input_boxes_labels": torch.as_tensor(labels, dtype=torch.long).expand(n, -1).to(device),
    }


def boxes_cxcywh(boxes: np.ndarray, shape: tuple[int, int], n: int):
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
