"""*Adapt SAM3 to these results*, without Qt: the Segment tab's last result as training labels.

The result layer as the user left it (hand-fixed masks included) gives the objects to find; the
objects the review marked rejected are hard negatives. `iter_adapt_result` runs
`core.sam3.adapt.iter_adapt` on the engine of the holder (one image: part of its objects is held
out) and, when the adapted model is better on them, makes it the holder's adapter, so the next
Segment and Count runs use it (`EngineHolder`); otherwise the base model stays.
"""

from __future__ import annotations

import numpy as np

from napari_sam3._napari import layers as L
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.prompts import parse_concepts
from napari_sam3.core.results.review import REJECTED, STATUS_COLUMN
from napari_sam3.core.sam3.adapt import AdaptExample, AdaptSettings, iter_adapt


def example_from_result(result) -> AdaptExample:
    """The image plane of a `TextResult` and its result layer's objects (accepted / rejected)."""
    if result is None or result.layer is None:
        raise Sam3Error("Run a text prompt first: adapting learns from its result layer.")
    labels = np.asarray(result.layer.data)
    if labels.ndim > 2:
        labels = labels[tuple(result.ref.index)]
    if labels.shape != tuple(result.ref.shape):
        raise Sam3Error("The result layer no longer matches its image plane; run the prompt again.")
    plane = L.read_plane(result.image.data, result.ref)
    labels = labels.astype(np.int64)
    rejected = None
    features = result.layer.features
    if STATUS_COLUMN in features and len(features):
        ids = "label" if "label" in features else "index"
        gone = features.loc[features[STATUS_COLUMN] == REJECTED, ids].to_numpy(np.int64)
        if gone.size:
            is_rejected = np.isin(labels, gone)
            rejected = np.where(is_rejected, labels, 0)
            labels = np.where(is_rejected, 0, labels)
    return AdaptExample(result.ref.layer_name, plane, labels, rejected, result.ref.rgb)


def adapt_concept(result) -> str:
    """The one concept a `TextResult` can teach (`Sam3Error` naming the fix otherwise)."""
    if result is None or result.layer is None:
        raise Sam3Error("Run a text prompt first: adapting learns from its result layer.")
    concepts = parse_concepts(result.prompt_text)
    if len(concepts) != 1:
        raise Sam3Error("Adapt to one concept at a time: run a single concept first.")
    return concepts[0]


def iter_adapt_result(holder, source: str, device: str, result, settings: AdaptSettings):
    """Generator for a worker: adapt on the result; returns the `AdaptResult`. A selected adapter
    becomes ``holder.adapter`` (used by the next runs)."""
    example = example_from_result(result)
    engine = yield from holder.iter_engine(source, device)
    adapted = yield from iter_adapt(engine, [example], settings)
    if adapted.selected:
        holder.adapter = adapted.adapter
    return adapted
