"""Clicks and boxes propagated through a stack (core.tracking.click_tracking), tiny video checkpoint.

The random tiny tracker scores every object just below "present" (object logit ~ -0.03), so every
mask would be suppressed; the ``present`` fixture raises that head's output bias on both the
engine's model and the reference (restored afterwards) so that masks exist and are compared.
Parity: the documented ``Sam3TrackerVideoModel`` usage (its own backbone copy, processor session
with the frames, add inputs + model call per prompt, propagate forward then in reverse).
"""

import threading

import numpy as np
import pytest
import torch

from napari_sam3.core.errors import Cancelled, Sam3Error
from napari_sam3.core.images import to_model_rgb
from napari_sam3.core.progress import run_to_end
from napari_sam3.core.tracking.click_tracking import ObjectPrompt, iter_track_objects, track_objects

FRAMES, H, W = 4, 40, 52
BIAS = 3.0
PROMPTS = [
    ObjectPrompt(1, 1, points_xy=[[20, 17]], point_labels=[1]),
    ObjectPrompt(2, 1, box_xyxy=[30, 5, 50, 30]),
    ObjectPrompt(1, 3, points_xy=[[22, 17], [5, 35]], point_labels=[1, 0]),  # a correction
]


@pytest.fixture(scope="module")
def video_checkpoint():
    from napari_sam3.testing import tiny_checkpoint_dir

    return tiny_checkpoint_dir(video=True)


@pytest.fixture(scope="module")
def video_engine(video_checkpoint):
    from napari_sam3.core.sam3.engine import Sam3Engine

    return Sam3Engine.load(str(video_checkpoint), device="cpu")


def _raise_presence(tracker, by):
    with torch.no_grad():
        tracker.mask_decoder.pred_obj_score_head.proj_out.bias += by


@pytest.fixture
def present(video_engine):
    _raise_presence(video_engine.model.tracker_model, BIAS)
    try:
        yield video_engine
    finally:
        _raise_presence(video_engine.model.tracker_model, -BIAS)


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 3000, (FRAMES, H, W)).astype(np.uint16)
    img[:, 10:25, 12:30] += 20000
    for t in range(FRAMES):
        img[t] = np.roll(img[t], t, axis=1)
    return img


def _reference(checkpoint, engine, stack, prompts):
    """The documented Sam3TrackerVideoModel usage on the same frames: {frame: (ids, scores, masks)}."""
    from transformers import Sam3TrackerVideoModel

    from napari_sam3.core.tracking.tracker_video import tracker_processor

    model = Sam3TrackerVideoModel.from_pretrained(str(checkpoint)).eval()
    _raise_presence(model, BIAS)
    processor = tracker_processor(engine.processor)  # the folder holds no video processor config
    frames = [to_model_rgb(f) for f in stack]
    session = processor.init_video_session(video=frames, inference_device="cpu")
    out = {}

    def keep(o):
        masks = processor.post_process_masks([o.pred_masks], original_sizes=[[H, W]])[0]
        scores = o.object_score_logits.float().sigmoid().reshape(-1).numpy()
        out[o.frame_idx] = (list(o.object_ids), scores, masks[:, 0].numpy())

    with torch.inference_mode():
        for p in sorted(prompts, key=lambda p: p.frame):
            kwargs = {}
            if p.points_xy is not None:
                kwargs = {"input_points": [[p.points_xy]], "input_labels": [[p.point_labels]]}
            if p.box_xyxy is not None:
                kwargs["input_boxes"] = [[p.box_xyxy]]
            processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=p.frame, obj_ids=p.obj_id, **kwargs
            )
            model(inference_session=session, frame_idx=p.frame)
        for o in model.propagate_in_video_iterator(session):
            keep(o)
        for o in model.propagate_in_video_iterator(session, reverse=True):
            keep(o)
    return out


@pytest.mark.slow
def test_same_as_the_documented_video_tracker(present, video_checkpoint, stack):
    result = track_objects(present, stack, PROMPTS)
    reference = _reference(video_checkpoint, present, stack, PROMPTS)
    assert sorted(reference) == list(range(FRAMES))
    visible = 0
    for f, (ids, scores, masks) in reference.items():
        ours = result.meta["object_scores"][f]
        assert list(ours) == ids == [1, 2]
        np.testing.assert_allclose(list(ours.values()), scores, atol=1e-5)
        # overlaps: the higher score wins the pixel (on a tie, the later object)
        expected = np.zeros((H, W), np.int32)
        for k in np.argsort(scores, kind="stable"):
            expected[masks[k]] = ids[k]
        np.testing.assert_array_equal(result.labels[f], expected)
        visible += int(expected.any())
    assert visible > 0, "the raised presence must make some masks visible"
    assert set(result.table["label"]) <= {1, 2}
    assert set(result.table["prompt"]) <= {"object 1", "object 2"}


def test_slices_encoded_once_then_read_from_the_cache(present, stack):
    present.clear_cache()
    first = track_objects(present, stack, PROMPTS)
    again = track_objects(present, stack, PROMPTS)
    assert first.meta["vision_encodes"] == FRAMES  # each slice once, though visited 2-3 times
    assert again.meta["vision_encodes"] == 0
    np.testing.assert_array_equal(first.labels, again.labels)


def test_progress_per_step_and_cancel_between_slices(video_engine, stack):
    reports = []
    result = run_to_end(iter_track_objects(video_engine, stack, PROMPTS[:2]), reports.append)
    steps = result.meta["steps"]
    assert steps == 1 + (FRAMES - 1) + 2  # the prompted slice, forward from it, back from it
    assert [r.step for r in reports] == list(range(steps + 1))
    cancel = threading.Event()

    def stop_after_two(report):
        if report.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        run_to_end(iter_track_objects(video_engine, stack, PROMPTS), stop_after_two, cancel)
    assert video_engine._lock.acquire(blocking=False)
    video_engine._lock.release()


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "at least one object"),
        ([ObjectPrompt(0, 0, [[1, 1]], [1])], "from 1"),
        ([ObjectPrompt(1, 9, [[1, 1]], [1])], "slices 0 to 3"),
        ([ObjectPrompt(1, 0)], "Click on the object"),
        ([ObjectPrompt(1, 0, [[1, 1]], [1]), ObjectPrompt(1, 0, [[2, 2]], [1])], "one prompt"),
    ],
)
def test_bad_prompts(video_engine, stack, prompts, message):
    with pytest.raises(Sam3Error, match=message):
        track_objects(video_engine, stack, prompts)
