"""Tracking concepts through a stack (core.stack_tracking) on the tiny random video checkpoint.

Random weights give random masks (and a tracker whose masks come out empty, so objects rarely
survive into the next frame): these tests check structure and invariants, and, exactly, that the
result is what the documented transformers video usage gives on the same frames.
"""

import threading

import numpy as np
import pytest
import torch

from napari_sam3.core.errors import Cancelled, Sam3Error
from napari_sam3.core.images import to_model_rgb
from napari_sam3.core.progress import run_to_end
from napari_sam3.core.tracking.stack_tracking import (
    TRACK_COLUMNS,
    _paint,
    _table,
    iter_track_stack,
    track_stack,
)

FRAMES, H, W = 3, 40, 52


@pytest.fixture(scope="module")
def video_checkpoint():
    from napari_sam3.testing import tiny_checkpoint_dir

    return tiny_checkpoint_dir(video=True)


@pytest.fixture(scope="module")
def video_engine(video_checkpoint):
    """An engine on the video-capable tiny checkpoint (cpu, float32 like the `engine` fixture)."""
    from napari_sam3.core.sam3.engine import Sam3Engine

    return Sam3Engine.load(str(video_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 3000, (FRAMES, H, W)).astype(np.uint16)
    img[:, 10:25, 12:30] += 20000  # a bright object drifting by a pixel per frame
    for t in range(FRAMES):
        img[t] = np.roll(img[t], t, axis=1)
    return img


@pytest.fixture(scope="module")
def tracked(video_engine, stack):
    return track_stack(video_engine, stack, "cell", min_score=0.0)


def _assert_consistent(result, n_frames):
    labels, table = result.labels, result.table
    assert labels.shape == (n_frames, H, W)
    assert labels.dtype == np.int32
    assert tuple(table.columns) == TRACK_COLUMNS
    for f in range(n_frames):
        rows = table[table["frame"] == f]
        ids = np.unique(labels[f])
        assert set(rows["label"]) == set(ids[ids != 0].tolist())
        for label, area in zip(rows["label"], rows["area"], strict=True):
            assert area == np.count_nonzero(labels[f] == label)
    # one prompt per track, whatever the frame
    assert (table.groupby("label")["prompt"].nunique() == 1).all()
    assert table["score"].between(0, 1).all()
    assert not table.duplicated(["frame", "label"]).any()


def test_track_stack_labels_and_table(tracked):
    assert len(tracked.table) > 0, "min_score=0 must give objects even with random weights"
    _assert_consistent(tracked, FRAMES)
    assert set(tracked.table["frame"]) == set(range(FRAMES))
    assert set(tracked.table["prompt"]) == {"cell"}
    assert tracked.meta["frames"] == FRAMES
    assert tracked.meta["tracks"] == tracked.n_tracks == tracked.table["label"].nunique()
    assert tracked.meta["detection_threshold"] == 0.0
    assert tracked.meta["seconds_per_frame"] > 0


def test_ids_persist_between_frames(tracked):
    # an id seen in frames k and k+1 is the same object: same prompt (the table rows say so)
    table = tracked.table
    for k in range(FRAMES - 1):
        both = set(table[table["frame"] == k]["label"]) & set(
            table[table["frame"] == k + 1]["label"]
        )
        for label in both:
            assert table[table["label"] == label]["prompt"].nunique() == 1


@pytest.mark.slow
def test_rgb_stack_and_two_concepts(video_engine, stack):
    rgb = np.stack([to_model_rgb(frame) for frame in stack])  # (T, H, W, 3) uint8
    result = track_stack(video_engine, rgb, ["cell", "nucleus"], min_score=0.3)
    _assert_consistent(result, FRAMES)
    assert set(result.table["prompt"]) <= {"cell", "nucleus"}


def test_default_thresholds_are_the_checkpoints(video_engine, stack):
    result = track_stack(video_engine, stack[:2], "cell")
    config = video_engine.model.config
    assert result.meta["detection_threshold"] == config.score_threshold_detection
    assert result.meta["new_object_threshold"] == config.new_det_thresh
    _assert_consistent(result, 2)


def test_progress_once_per_frame(video_engine, stack):
    reports = []
    run_to_end(iter_track_stack(video_engine, stack, "cell", min_score=0.5), reports.append)
    per_frame = [r for r in reports if "frame" in r.message]
    assert [r.step for r in per_frame] == list(range(FRAMES))
    assert all(r.total == FRAMES for r in reports)
    assert reports[-1].step == FRAMES


def _lock_is_free(engine) -> bool:
    """Another thread can take the engine lock (an RLock: released by the thread that took it)."""
    got = []

    def take():
        got.append(engine._lock.acquire(blocking=False))
        if got[0]:
            engine._lock.release()

    t = threading.Thread(target=take)
    t.start()
    t.join()
    return got[0]


@pytest.mark.slow
@pytest.mark.parametrize("reports_before_cancel", [1, 2])
def test_cancel_between_frames_leaves_no_state(video_engine, stack, tracked, reports_before_cancel):
    model, config = video_engine.model, video_engine.model.config
    gen = iter_track_stack(video_engine, stack, "cell", min_score=0.0)
    for _ in range(reports_before_cancel):
        next(gen)
    gen.close()
    assert _lock_is_free(video_engine)
    assert model.score_threshold_detection == config.score_threshold_detection
    assert model.new_det_thresh == config.new_det_thresh
    # the engine still segments a plane, and tracking again gives the same result as before
    assert video_engine.segment_text(stack[0], "cell", min_score=0.0).masks.shape[1:] == (H, W)
    again = track_stack(video_engine, stack, "cell", min_score=0.0)
    np.testing.assert_array_equal(again.labels, tracked.labels)


def test_run_to_end_cancel_event(video_engine, stack):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_to_end(iter_track_stack(video_engine, stack, "cell"), cancel=cancel)
    assert _lock_is_free(video_engine)


@pytest.mark.slow
def test_start_in_the_middle_covers_every_frame(video_engine, stack):
    result = track_stack(video_engine, stack, "cell", min_score=0.0, start=1)
    _assert_consistent(result, FRAMES)
    assert set(result.table["frame"]) == set(range(FRAMES))


@pytest.mark.parametrize(
    ("data", "concepts", "options", "message"),
    [
        (np.zeros((H, W)), "cell", {}, "single plane"),
        (np.zeros((1, H, W)), "cell", {}, "single plane"),
        (np.zeros((H, W, 3), np.uint8), "cell", {}, "single plane"),
        (np.zeros((2, 2, 2, H, W)), "cell", {}, "pick the axis"),
        (np.zeros((FRAMES, H, W)), "  ,", {}, "prompt is empty"),
        (np.zeros((FRAMES, H, W)), "cell", {"min_score": 1.5}, "min_score"),
        (np.zeros((FRAMES, H, W)), "cell", {"start": FRAMES}, "start frame"),
        (np.zeros((FRAMES, 4, 4)), "cell", {}, "at least"),
    ],
)
def test_bad_input(video_engine, data, concepts, options, message):
    with pytest.raises(Sam3Error, match=message):
        track_stack(video_engine, data, concepts, **options)


def test_bad_frame_is_named(video_engine, stack):
    bad = stack.astype(np.float32)
    bad[1] = np.nan
    with pytest.raises(Sam3Error, match="Frame 1"):
        track_stack(video_engine, bad, "cell")


def test_checkpoint_that_cannot_track(engine, stack):
    # the default tiny checkpoint is too narrow for the video tracker: say so, do not crash
    with pytest.raises(Sam3Error, match="cannot track"):
        track_stack(engine, stack, "cell")


# ---------------------------------------------------------------------- label assembly
def _post(ids, scores, masks, prompts):
    return {
        "object_ids": torch.tensor(ids, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "masks": torch.from_numpy(np.asarray(masks, bool)),
        "prompt_to_obj_ids": prompts,
    }


def test_paint_same_object_same_id_and_higher_score_wins():
    labels = np.zeros((2, 6, 6), np.int32)
    scores, prompts = [{}, {}], {}
    a = np.zeros((6, 6), bool)
    a[1:4, 1:4] = True
    b = np.zeros((6, 6), bool)
    b[2:5, 2:5] = True
    _paint(labels[0], scores[0], prompts, _post([7, 3], [0.9, 0.6], [a, b], {"x": [7], "y": [3]}))
    _paint(labels[1], scores[1], prompts, _post([7], [0.8], [b], {"x": [7]}))
    assert labels[0][2, 2] == 8  # object 7 (score 0.9) owns the overlap
    assert np.count_nonzero(labels[0] == 4) == 9 - 4
    assert np.count_nonzero(labels[1] == 8) == 9  # same object, same id in the next frame
    table = _table(labels, scores, prompts)
    assert table[["frame", "label", "prompt", "area"]].values.tolist() == [
        [0, 4, "y", 5],
        [0, 8, "x", 9],
        [1, 8, "x", 9],
    ]


def test_empty_result_table_has_the_columns():
    table = _table(np.zeros((2, 8, 8), np.int32), [{}, {}], {})
    assert tuple(table.columns) == TRACK_COLUMNS
    assert len(table) == 0


# ---------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def reference_video(video_checkpoint):
    """The documented transformers usage on its own copy of the checkpoint.

    The tiny folder holds no video-processor config, so the Sam3VideoProcessor is assembled from
    the saved image processor and tokenizer (exactly what from_pretrained would build).
    """
    from transformers import (
        Sam2VideoVideoProcessor,
        Sam3Processor,
        Sam3VideoModel,
        Sam3VideoProcessor,
    )

    model = Sam3VideoModel.from_pretrained(
        str(video_checkpoint), score_threshold_detection=0.4, new_det_thresh=0.4
    ).eval()
    parts = Sam3Processor.from_pretrained(str(video_checkpoint))
    image = parts.image_processor
    video = Sam2VideoVideoProcessor(
        size=dict(image.size), image_mean=image.image_mean, image_std=image.image_std
    )
    processor = Sam3VideoProcessor(
        image_processor=image, video_processor=video, tokenizer=parts.tokenizer
    )
    return model, processor


@pytest.mark.parametrize("start", [0, 1])
def test_parity_with_transformers_video(video_engine, reference_video, stack, start):
    model, processor = reference_video
    frames = [to_model_rgb(frame) for frame in stack]
    session = processor.init_video_session(
        video=frames, inference_device="cpu", dtype=torch.float32
    )
    processor.add_text_prompt(inference_session=session, text="cell")
    expected = {}
    passes = [dict(start_frame_idx=start)]
    if start:
        passes.append(dict(start_frame_idx=start, reverse=True))
    for kwargs in passes:
        for out in model.propagate_in_video_iterator(inference_session=session, **kwargs):
            expected[out.frame_idx] = processor.postprocess_outputs(session, out)
    assert sorted(expected) == list(range(FRAMES))

    result = track_stack(video_engine, stack, "cell", min_score=0.4, start=start)
    n_objects = 0
    for f, post in expected.items():
        want = np.zeros((H, W), np.int32)
        for obj_id, mask in zip(post["object_ids"].tolist(), post["masks"].numpy(), strict=True):
            want[mask] = obj_id + 1  # one concept: transformers' masks do not overlap
        np.testing.assert_array_equal(result.labels[f], want)
        rows = result.table[result.table["frame"] == f].set_index("label")["score"]
        for obj_id, score in zip(post["object_ids"].tolist(), post["scores"].tolist(), strict=True):
            if obj_id + 1 in rows.index:
                assert rows[obj_id + 1] == pytest.approx(score, abs=1e-6)
        n_objects += len(post["object_ids"])
    assert n_objects > 0, "the comparison needs objects"


@pytest.mark.slow
def test_bf16_fast_path_tracks_close_to_float32(video_checkpoint, stack, tracked, monkeypatch):
    """NAPARI_SAM3_CPU_FAST=bf16 runs each frame under bf16 autocast (as SAM3's own video
    predictor does on GPUs); on the same weights the label stack stays close to float32."""
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.sam3.loading import load_model

    monkeypatch.setenv("NAPARI_SAM3_CPU_FAST", "bf16")
    fast = Sam3Engine(load_model(str(video_checkpoint), device="cpu"))
    assert fast.cpu_fast_path == "bf16"
    seen = []  # the backbone's Linear layers really ran in bf16 during tracking
    backbone = fast.model.detector_model.vision_encoder
    linear = next(m for m in backbone.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        got = track_stack(fast, stack, "cell", min_score=0.0)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    _assert_consistent(got, FRAMES)
    assert got.labels.dtype == np.int32
    agree = ((got.labels > 0) == (tracked.labels > 0)).mean()
    assert agree > 0.95, agree
