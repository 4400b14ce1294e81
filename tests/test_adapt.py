"""Adapting SAM3 to a user's labels (core.sam3.adapter, matching_loss, adapt) on the tiny checkpoint.

The tiny checkpoint has random weights: the base model finds nothing at the segment threshold, so
held-out F1 starts at 0 and any rise is learnt from the labels through the real training path.
"""

import numpy as np
import pytest
import torch

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress, run_to_end
from napari_sam3.core.sam3.adapt import AdaptExample, AdaptSettings, iter_adapt, split_holdout
from napari_sam3.core.sam3.adapter import Sam3Adapter, adapted_layers
from napari_sam3.core.sam3.matching_loss import Targets, detection_loss, generalized_iou
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io.adapter_file import write_adapter


@pytest.fixture
def base_engine(engine):
    """The shared engine, given back without an adapter whatever the test did."""
    engine.set_adapter(None)
    yield engine
    engine.set_adapter(None)


def _nuclei(n_images, per_image=1, diameter=80.0):
    out = []
    for i in range(n_images):
        img, lab = synthetic_nuclei((224, 224), n=per_image, seed=i, diameter=diameter, touching=0)
        out.append(AdaptExample(f"img{i}", img, lab))
    return out


def _outputs(engine, plane):
    enc = engine.encode(plane)
    with torch.inference_mode():
        text, mask = engine._text_features(["nucleus"])
        return engine.model.detector_model(
            vision_embeds=enc.vision, text_embeds=text, attention_mask=mask
        )


def test_zero_adapter_gives_exactly_the_base_outputs(base_engine):
    plane = _nuclei(1, 3, 40)[0].plane
    base = _outputs(base_engine, plane)
    adapter = Sam3Adapter.new(base_engine.model.detector_model, rank=4)
    assert adapter.is_zero()
    base_engine.set_adapter(adapter)
    same = _outputs(base_engine, plane)
    for name in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(getattr(base, name), getattr(same, name)), name
    # a non-zero update changes them (the hooks are really in the path)
    with torch.no_grad():
        for _, b in adapter.weights.values():
            b.fill_(0.01)
    changed = _outputs(base_engine, plane)
    assert not torch.equal(base.pred_masks, changed.pred_masks)
    assert not torch.equal(base.pred_logits, changed.pred_logits)


def test_zero_adapter_parity_with_transformers(base_engine, tiny_checkpoint, tmp_path):
    """Our forward with a zero adapter file loaded equals plain transformers' Sam3Model."""
    from transformers import Sam3Model, Sam3Processor

    plane = _nuclei(1, 3, 40)[0].plane
    file = write_adapter(
        Sam3Adapter.new(base_engine.model.detector_model, rank=2), tmp_path / "z.safetensors"
    )
    base_engine.set_adapter(file)
    rgb = np.repeat(((plane - plane.min()) / np.ptp(plane) * 255).astype(np.uint8)[..., None], 3, 2)
    ours = base_engine.segment_text(rgb, "nucleus", min_score=0.0)
    model = Sam3Model.from_pretrained(str(tiny_checkpoint)).eval()
    processor = Sam3Processor.from_pretrained(str(tiny_checkpoint))
    inputs = processor(images=rgb, text="nucleus", return_tensors="pt")
    with torch.no_grad():
        ref = processor.post_process_instance_segmentation(
            model(**inputs), threshold=0.0, mask_threshold=0.5, target_sizes=[rgb.shape[:2]]
        )[0]
    np.testing.assert_allclose(np.sort(ours.scores), np.sort(ref["scores"].numpy()), atol=1e-5)
    assert base_engine.adapter is not None and base_engine.adapter.is_zero()


def test_adapter_file_round_trip_and_refusals(base_engine, tmp_path):
    det = base_engine.model.detector_model
    adapter = Sam3Adapter.new(det, rank=3)
    with torch.no_grad():
        for _, b in adapter.weights.values():
            b.normal_()
    adapter.meta.update(concept="nucleus", steps=5, before={"f1": 0.0}, after={"f1": 0.5})
    path = write_adapter(adapter, tmp_path / "n.sam3-adapter.safetensors")
    with pytest.raises(Sam3Error, match="already exists"):
        write_adapter(adapter, path)
    from napari_sam3.core.sam3.engine import Sam3Engine

    same = Sam3Engine.load(base_engine.source, device="cpu", adapter=path)
    assert same is base_engine and base_engine.adapter.meta["file"] == str(path)
    assert Sam3Engine.load(base_engine.source, device="cpu").adapter is base_engine.adapter
    base_engine.set_adapter(None)
    back = Sam3Adapter.load(path, det)
    assert back.rank == 3 and back.meta["concept"] == "nucleus" and back.meta["after"]["f1"] == 0.5
    for name, (a, b) in adapter.weights.items():
        assert torch.equal(back.weights[name][0], a) and torch.equal(back.weights[name][1], b)

    from safetensors.torch import load_file, save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(Sam3Error, match="not a napari-sam3 adapter"):
        Sam3Adapter.load(foreign, det)
    tensors = load_file(str(path))
    first = next(iter(adapted_layers(det)))
    tensors[f"{first}.lora_A"] = torch.zeros(5, 7)
    bad = tmp_path / "bad.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        save_file(tensors, str(bad), metadata=fh.metadata())
    with pytest.raises(Sam3Error, match="does not fit"):
        base_engine.set_adapter(bad)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a file at all")
    with pytest.raises(Sam3Error, match="not a safetensors file"):
        Sam3Adapter.load(garbage, det)
    assert base_engine.adapter is None  # a refused file changes nothing


def test_matching_loss_prefers_the_right_query():
    """The matcher pairs each object with the query that predicts it, and the loss is low there."""
    q, h = 4, 16
    masks = torch.full((1, q, h, h), -8.0)
    target = torch.zeros(1, h, h)
    target[0, 2:8, 3:9] = 1
    masks[0, 2, 2:8, 3:9] = 8.0  # query 2 predicts the object
    boxes = torch.tensor([[[0.5, 0.5, 0.9, 0.9]] * q])
    boxes[0, 2] = torch.tensor([3 / h, 2 / h, 9 / h, 8 / h])
    logits = torch.full((1, q), -5.0)
    logits[0, 2] = 5.0

    class Out:
        pred_logits, pred_boxes, pred_masks, presence_logits = logits, boxes, masks, None

    targets = Targets(target, torch.tensor([[3 / h, 2 / h, 9 / h, 8 / h]]))
    good, _ = detection_loss(Out, targets)
    Out.pred_logits = logits.roll(1, 1)  # the right mask, but another query is confident
    worse, terms = detection_loss(Out, targets)
    assert float(good) < 0.1 < float(worse)
    assert generalized_iou(boxes[0, 2:3], boxes[0, 2:3]).item() == pytest.approx(1.0)


def test_rejected_objects_are_hard_negatives():
    """A confident query on a rejected object costs more than on plain background."""
    h = 16
    masks = torch.full((1, 3, h, h), -8.0)
    masks[0, 0, 2:8, 2:8] = 8.0  # query 0: the accepted object
    masks[0, 1, 10:15, 10:15] = 8.0  # query 1: what the user rejected
    logits = torch.tensor([[5.0, 5.0, -5.0]])
    boxes = torch.tensor([[[2 / h, 2 / h, 8 / h, 8 / h], [10 / h, 10 / h, 15 / h, 15 / h],
                           [0.0, 0.0, 0.1, 0.1]]])  # fmt: skip

    class Out:
        pred_logits, pred_boxes, pred_masks, presence_logits = logits, boxes, masks, None

    accepted = torch.zeros(1, h, h)
    accepted[0, 2:8, 2:8] = 1
    rejected = torch.zeros(1, h, h)
    rejected[0, 10:15, 10:15] = 1
    plain = Targets(accepted, boxes[0, :1])
    with_negative = Targets(accepted, boxes[0, :1], negatives=rejected)
    loss_plain, t_plain = detection_loss(Out, plain)
    loss_neg, t_neg = detection_loss(Out, with_negative)
    assert t_neg["class"] > 2 * t_plain["class"] > 0
    # an ignored (held-out) object is neither rewarded nor punished
    ignored = Targets(accepted, boxes[0, :1], ignore=rejected)
    assert detection_loss(Out, ignored)[1]["class"] < t_plain["class"]


def test_holdout_split():
    ex = _nuclei(4)
    splits = split_holdout(ex, 0.25, 0)
    assert sum(sp.train is None for sp in splits) == 1
    one = _nuclei(1, 8, 30)
    (sp,) = split_holdout(one, 0.25, 0)
    held, kept = np.unique(sp.truth)[1:], np.unique(sp.train)[1:]
    assert len(held) >= 1 and len(kept) >= 1 and not set(held) & set(kept)
    with pytest.raises(Sam3Error, match="fewer than 2"):
        split_holdout(_nuclei(1, 1), 0.25, 0)


@pytest.mark.slow
def test_adapting_moves_heldout_f1_from_zero(base_engine, tmp_path):
    """8 images of one nucleus each, 2 held out: F1@0.5 0 -> 1 on them (rank 8, 200 steps)."""
    torch.manual_seed(0)
    examples = _nuclei(8)
    reports = []
    gen = iter_adapt(base_engine, examples, AdaptSettings("nucleus", steps=200))
    result = run_to_end(gen, reports.append)
    assert any("left" in p.message for p in reports if isinstance(p, Progress))
    assert result.before["f1"] == 0.0
    assert result.after["f1"] >= 0.5, result.message
    assert result.selected and "better" in result.message
    assert base_engine.adapter is None  # training leaves the engine as it was
    path = write_adapter(result.adapter, tmp_path / "a.sam3-adapter.safetensors")
    base_engine.set_adapter(path)
    held = [ex for ex in examples if ex.name in result.adapter.meta["held_out"]]
    cands = base_engine.segment_text(held[0].plane, "nucleus")
    assert len(cands) >= 1


def test_cancel_leaves_the_engine_as_it_was(base_engine):
    import threading

    from napari_sam3.core.errors import Cancelled

    cancel = threading.Event()

    def on_progress(p):
        if p.message.startswith("Adapting: step 2/"):
            cancel.set()

    gen = iter_adapt(base_engine, _nuclei(3), AdaptSettings("nucleus", steps=50))
    with pytest.raises(Cancelled):
        run_to_end(gen, on_progress, cancel)
    assert base_engine.adapter is None
    plane = _nuclei(1)[0].plane
    assert len(base_engine.segment_text(plane, "nucleus", min_score=0.5)) == 0  # base model
