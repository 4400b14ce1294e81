"""The engine gives what the documented transformers usage gives, on the same checkpoint.

Detector: Sam3Processor -> Sam3Model (the detector part of the same checkpoint, with its own copy of
the backbone) -> post_process_instance_segmentation. Tracker: Sam3TrackerProcessor ->
Sam3TrackerModel -> post_process_masks. Scores must agree to 1e-5 and masks be identical, although
the engine runs both heads on ONE shared, cached backbone pass and batches concepts.
"""

import numpy as np
import pytest
import torch

from napari_sam3.core.images import to_model_rgb

THRESHOLD = 0.1


@pytest.fixture(scope="module")
def plane():
    # non-square and not the model size, so coordinate scaling and resizing are exercised
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    img[40:90, 60:120] = (230, 200, 40)  # a bright object
    return img


@pytest.fixture(scope="module")
def reference_detector(tiny_checkpoint):
    from transformers import Sam3Model, Sam3Processor

    model = Sam3Model.from_pretrained(str(tiny_checkpoint)).eval()
    processor = Sam3Processor.from_pretrained(str(tiny_checkpoint))
    return model, processor


@pytest.fixture(scope="module")
def reference_tracker(tiny_checkpoint):
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    model = Sam3TrackerModel.from_pretrained(str(tiny_checkpoint)).eval()
    processor = Sam3TrackerProcessor.from_pretrained(str(tiny_checkpoint))
    return model, processor


def _reference_detect(reference, rgb, **prompt):
    model, processor = reference
    inputs = processor(images=rgb, return_tensors="pt", **prompt)
    with torch.no_grad():
        outputs = model(**inputs)
    result = processor.post_process_instance_segmentation(
        outputs,
        threshold=THRESHOLD,
        mask_threshold=0.5,
        target_sizes=inputs["original_sizes"].tolist(),
    )[0]
    return result["scores"].numpy(), result["masks"].numpy().astype(bool)


def _assert_same(ref_scores, ref_masks, cands):
    """One-to-one: every reference instance has an engine candidate with the same mask and a
    score within 1e-5, and nothing else is there."""
    assert len(cands) == len(ref_scores) > 0
    # both sorted by score; near-ties may be ordered differently, so match greedily
    unused = set(range(len(cands)))
    for s, m in zip(ref_scores, ref_masks, strict=True):
        match = [
            j
            for j in unused
            if abs(float(cands.scores[j]) - float(s)) <= 1e-5 and np.array_equal(cands.masks[j], m)
        ]
        assert match, f"no engine candidate with score {s:.6f} and the same mask"
        unused.remove(match[0])
    np.testing.assert_allclose(np.sort(cands.scores), np.sort(ref_scores), atol=1e-5, rtol=0)


def test_text_parity(engine, reference_detector, plane):
    cands = engine.segment_text(plane, "nucleus", min_score=THRESHOLD)
    ref_scores, ref_masks = _reference_detect(reference_detector, plane, text="nucleus")
    _assert_same(ref_scores, ref_masks, cands)
    assert cands.masks.shape[1:] == plane.shape[:2]
    assert set(cands.prompts) == {"nucleus"}


def test_two_concepts_batched_match_each_alone(engine, reference_detector, plane):
    """Batching concepts along the expanded (view) features changes nothing."""
    cands = engine.segment_text(plane, ["cell", "mitotic figure"], min_score=THRESHOLD)
    for concept in ("cell", "mitotic figure"):
        ref_scores, ref_masks = _reference_detect(reference_detector, plane, text=concept)
        _assert_same(ref_scores, ref_masks, cands.subset(cands.prompts == concept))


def test_exemplar_parity_boxes_alone(engine, reference_detector, plane):
    boxes = [[60.0, 40.0, 120.0, 90.0], [5.0, 100.0, 40.0, 140.0]]
    labels = [1, 0]
    cands = engine.segment_exemplars(plane, boxes, labels, min_score=THRESHOLD)
    ref_scores, ref_masks = _reference_detect(
        reference_detector, plane, input_boxes=[boxes], input_boxes_labels=[labels]
    )
    _assert_same(ref_scores, ref_masks, cands)
    assert cands.kind == "exemplar"


def test_exemplar_parity_with_text(engine, reference_detector, plane):
    boxes = [[60.0, 40.0, 120.0, 90.0]]
    cands = engine.segment_exemplars(plane, boxes, [1], text="yellow blob", min_score=THRESHOLD)
    ref_scores, ref_masks = _reference_detect(
        reference_detector, plane, text="yellow blob", input_boxes=[boxes], input_boxes_labels=[[1]]
    )
    _assert_same(ref_scores, ref_masks, cands)


def _reference_embeddings(model, pixel_values, add_no_memory=True):
    """Image embeddings the way the original SAM3 interactive predictor prepares them
    (sam3/model/sam1_task_predictor.py, set_image): three FPN levels, ``no_memory_embedding`` added
    to the lowest-resolution one. transformers 5.24's Sam3TrackerModel adds it to the fourth (0.5x)
    level, which is then dropped by ``zip(..., backbone_feature_sizes)``: see
    test_documented_tracker_drops_no_memory_embedding."""
    feats = list(model.get_image_features(pixel_values, return_dict=True).fpn_hidden_states)[:3]
    if add_no_memory:
        feats[-1] = feats[-1] + model.no_memory_embedding
    return [
        f.permute(1, 2, 0).reshape(1, -1, *size)
        for f, size in zip(feats, model.backbone_feature_sizes, strict=True)
    ]


def _reference_track(reference, rgb, multimask=True, add_no_memory=True, embeddings=True, **prompt):
    model, processor = reference
    inputs = processor(images=rgb, return_tensors="pt", **prompt)
    pixel_values = inputs.pop("pixel_values")
    original_sizes = inputs.pop("original_sizes")
    with torch.no_grad():
        if embeddings:
            emb = _reference_embeddings(model, pixel_values, add_no_memory)
            outputs = model(image_embeddings=emb, multimask_output=multimask, **inputs)
        else:  # the one-call documented usage
            outputs = model(pixel_values=pixel_values, multimask_output=multimask, **inputs)
    masks = processor.post_process_masks(outputs.pred_masks, original_sizes)[0][0]
    return outputs.iou_scores[0, 0].numpy(), masks.numpy().astype(bool)


@pytest.mark.parametrize(
    "prompt",
    [
        dict(points=[[90.0, 65.0]], labels=[1]),
        dict(points=[[90.0, 65.0], [10.0, 10.0]], labels=[1, 0]),
        dict(box=[60.0, 40.0, 120.0, 90.0]),
        dict(points=[[90.0, 65.0]], labels=[1], box=[60.0, 40.0, 120.0, 90.0]),
    ],
    ids=["click", "click+negative", "box", "click+box"],
)
def test_click_parity(engine, reference_tracker, plane, prompt):
    kwargs = {}
    if "points" in prompt:
        kwargs["input_points"] = [[prompt["points"]]]
        kwargs["input_labels"] = [[prompt["labels"]]]
    if "box" in prompt:
        kwargs["input_boxes"] = [[prompt["box"]]]
    ref_iou, ref_masks = _reference_track(reference_tracker, plane, **kwargs)
    cands = engine.segment_points(
        plane, prompt.get("points"), prompt.get("labels"), prompt.get("box"), multimask=True
    )
    assert len(cands) == 3
    order = np.argsort(-ref_iou, kind="stable")
    np.testing.assert_allclose(cands.iou_scores, ref_iou[order], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cands.scores, ref_iou[order], atol=1e-5, rtol=0)
    for k, j in enumerate(order):
        assert np.array_equal(cands.masks[k], ref_masks[j])
    assert cands.kind == ("points" if "points" in prompt else "box")


def test_single_mask_parity(engine, reference_tracker, plane):
    ref_iou, ref_masks = _reference_track(
        reference_tracker,
        plane,
        multimask=False,
        input_points=[[[[90.0, 65.0]]]],
        input_labels=[[[1]]],
    )
    cands = engine.segment_points(plane, [[90.0, 65.0]], [1], multimask=False)
    assert len(cands) == 1
    np.testing.assert_allclose(cands.scores, ref_iou, atol=1e-5, rtol=0)
    assert np.array_equal(cands.masks[0], ref_masks[0])


def test_documented_tracker_drops_no_memory_embedding(reference_tracker, plane):
    """transformers quirk (5.24, modeling_sam3_tracker.py, Sam3TrackerModel.forward and
    get_image_embeddings): the one-call usage adds ``no_memory_embedding`` to a feature level it
    then discards, so it equals the embeddings path WITHOUT that term. Our engine follows the
    original predictor and Sam3VideoModel (term added). If this starts failing, transformers fixed
    it: the plain documented call should then match test_click_parity's reference directly."""
    prompt = dict(input_points=[[[[90.0, 65.0]]]], input_labels=[[[1]]])
    plain_iou, plain_masks = _reference_track(reference_tracker, plane, embeddings=False, **prompt)
    bare_iou, bare_masks = _reference_track(reference_tracker, plane, add_no_memory=False, **prompt)
    np.testing.assert_allclose(plain_iou, bare_iou, atol=1e-6, rtol=0)
    assert np.array_equal(plain_masks, bare_masks)


def test_gray_16bit_plane_parity(engine, reference_detector):
    """The engine's normalisation + model equals feeding its RGB picture to transformers."""
    rng = np.random.default_rng(3)
    plane = rng.normal(1000, 50, (96, 120)).astype(np.uint16)
    plane[30:60, 40:80] += 2000
    plane[0, 0] = 65535  # hot pixel
    rgb = to_model_rgb(plane)
    cands = engine.segment_text(plane, "nucleus", min_score=THRESHOLD)
    ref_scores, ref_masks = _reference_detect(reference_detector, rgb, text="nucleus")
    _assert_same(ref_scores, ref_masks, cands)
