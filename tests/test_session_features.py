"""Every Segment feature through its Qt-free session: a napari ViewerModel, the tiny random SAM3
checkpoint (the real code path, no mock) and jobs driven inline (`testing.InlineSubmit`).

Review (reject / un-reject) and export of a text result, exemplars drawn on one image used on
another (and re-filtered), clicks propagated through a stack, adapting SAM3 to a fixed result,
and training the nucleus network on a reviewed result. The Qt tests only check the wiring.
"""

import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel

from napari_sam3._napari import layers as L
from napari_sam3._napari.engine_holder import EngineHolder
from napari_sam3._napari.export_layer import export_layer
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.review_session import ReviewSession
from napari_sam3._napari.segment_session import SegmentSession
from napari_sam3._napari.train_session import TrainSession, labelled_pairs
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.results.review import REJECTED, STATUS_COLUMN
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io.tiff import read_labels_tiff
from napari_sam3.testing import InlineSubmit


def _cells(seed, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in [(12, 16), (30, 44), (24, 24)]:
        img[(yy - cy - seed) ** 2 + (xx - cx) ** 2 < 50] += 120
    return img.clip(0, 255).astype(np.uint8)


class Seg:
    """A SegmentSession on a ViewerModel, its inline runner and what it said."""

    def __init__(self, engine) -> None:
        self.viewer = ViewerModel()
        self.runner = InlineSubmit()
        self.holder = EngineHolder(loader=lambda source, device: engine)
        self.session = SegmentSession(
            self.viewer, self.holder, self.runner, self.runner, lambda step: step()
        )
        self.said: list[str] = []
        self.session.events.status.connect(lambda e: self.said.append(e.value))

    def run(self, image) -> PlaneRun:
        dims = self.viewer.dims
        ref = L.plane_ref(image, dims.point, dims.displayed, 2)
        return PlaneRun(image, ref, Preprocessing(), ("tiny", "cpu"))


@pytest.fixture
def seg(engine):
    return Seg(engine)


@pytest.fixture(scope="module")
def video_engine():
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.testing import tiny_checkpoint_dir

    return Sam3Engine.load(str(tiny_checkpoint_dir(video=True)), device="cpu")


def _text_result(seg, image, threshold=0.1):
    seg.session.run_text(seg.run(image), "nucleus", True, L.FilterSettings(min_score=threshold))
    return seg.session.last_text


def test_review_reject_unreject_refilter_and_export(seg, tmp_path):
    image = seg.viewer.add_image(_cells(1), name="cells")
    res = _text_result(seg, image)
    layer = res.layer
    full = np.array(layer.data)
    review = ReviewSession(layer, advance=False)
    assert len(layer.features) >= 3 and set(layer.features[STATUS_COLUMN]) == {"unreviewed"}
    review.reject(2)
    assert 2 not in np.unique(layer.data) and review.status_of(2) == REJECTED
    review.accept(2)  # un-reject: its pixels come back, nothing else moved
    np.testing.assert_array_equal(layer.data, full)
    review.reject(2)
    review.accept(1)
    # a re-filter (the worst object goes) keeps the decisions and the rejected object out
    scores = layer.features.sort_values("label")["score"].to_numpy()
    seg.session.refilter(L.FilterSettings(min_score=float(scores[-1]) + 1e-4))
    assert seg.session.last_text.layer is layer and len(layer.features) == len(scores) - 1
    by_label = layer.features.set_index("label")[STATUS_COLUMN]
    assert by_label[2] == REJECTED and by_label[1] == "accepted"
    assert 2 not in np.unique(layer.data)
    # export: the rejected object is in neither the TIFF nor the CSV
    paths = export_layer(seg.viewer, layer, tmp_path, ("tiff",))
    saved = read_labels_tiff(paths["labels_tiff"]).data
    table = pd.read_csv(paths["objects_csv"])
    in_tiff = set(np.unique(saved).tolist()) - {0}
    assert set(table["label"]) == in_tiff and 1 in in_tiff and 2 not in in_tiff
    assert table.set_index("label").loc[1, "area"] == (saved == 1).sum() > 0


@pytest.mark.slow
def test_exemplars_on_another_image_are_a_refilterable_result(seg, engine):
    a = seg.viewer.add_image(_cells(0), name="A")
    b = seg.viewer.add_image(_cells(3), name="B")
    run_a, run_b = seg.run(a), seg.run(b)
    low = L.FilterSettings(min_score=0.1)
    with pytest.raises(Sam3Error, match="Draw exemplar boxes on 'A'"):
        seg.session.run_exemplar_transfer(run_a, run_b, "", low)
    _, boxes = seg.session.clicks.add_prompt_layers(a, run_a.ref)
    boxes.add([np.array([[4, 8], [4, 24], [20, 24], [20, 8]], float)], shape_type="rectangle")
    seg.session.run_exemplar_transfer(run_a, run_b, "", low)
    res = seg.session.last_text
    raw = engine.segment_with(_cells(3), engine.exemplar_prompt(_cells(0), [[8, 4, 24, 20]]))
    expected = L.prepare_filtered(raw, run_b.ref, "x", low)
    assert res.image is b and res.layer.name == "exemplars from A · B"
    assert len(res.layer.features) == len(expected.cands) > 0
    np.testing.assert_array_equal(res.layer.data, expected.data)
    assert set(res.layer.features[STATUS_COLUMN]) == {"unreviewed"}  # joins the review table
    # re-filtered like a text result: the same layer, no model call, status kept
    before = dict(engine.stats)
    seg.session.refilter(L.FilterSettings(min_score=float(expected.cands.scores.max()) - 1e-4))
    assert seg.session.last_text is res and len(res.layer.features) == 1
    assert STATUS_COLUMN in res.layer.features and engine.stats == before
    assert "'exemplars from A · B'" in seg.session.driven_text()


@pytest.mark.slow
def test_propagation_through_a_stack(video_engine):
    from napari_sam3.core.tracking.click_tracking import ObjectPrompt, track_objects

    seg = Seg(video_engine)
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 48)).astype(np.uint8)
    image = seg.viewer.add_image(stack, name="stack")
    seg.viewer.dims.set_current_step(0, 1)
    run = seg.run(image)
    assert seg.session.new_object(image) is None  # no prompt layers yet: nothing to start
    clicks, boxes = seg.session.clicks.add_prompt_layers(image, run.ref)
    with pytest.raises(Sam3Error, match="Click on"):
        seg.session.run_propagation(run)
    clicks.add([[1, 17, 20]])  # object 1 on slice 1 (row 17, column 20)
    clicks.add([[2, 18, 21]])  # ... and a correction on slice 2
    assert seg.session.new_object(image) == 2  # the box belongs to object 2
    assert seg.said[-1] == "Clicks and boxes now belong to object 2."
    boxes.add(
        [np.array([[1, 5, 30], [1, 5, 45], [1, 30, 45], [1, 30, 30]], float)],
        shape_type="rectangle",
    )
    seg.session.run_propagation(run)
    layer = seg.viewer.layers["SAM3 objects: stack"]
    expected = track_objects(
        video_engine,
        stack,
        [
            ObjectPrompt(1, 1, [[20, 17]], [1]),
            ObjectPrompt(1, 2, [[21, 18]], [1]),
            ObjectPrompt(2, 1, box_xyxy=[30, 5, 45, 30]),
        ],
    )
    np.testing.assert_array_equal(layer.data, expected.labels)
    assert layer.features["label"].tolist() == [1, 2]
    assert set(layer.features[STATUS_COLUMN]) == {"unreviewed"}
    assert layer.metadata["sam3_track_meta"]["objects"] == [1, 2]
    assert seg.said[-1].startswith("Propagated 2 object(s) through 3 slices")
    plane = seg.viewer.add_image(stack[0], name="plane")
    with pytest.raises(Sam3Error, match="z or t stack"):
        seg.session.run_propagation(seg.run(plane))


@pytest.mark.slow
def test_adapt_to_a_fixed_result_then_save(seg, engine, tmp_path):
    from napari_sam3.core.sam3.adapt import AdaptSettings
    from napari_sam3.core.sam3.adapter import Sam3Adapter

    with pytest.raises(Sam3Error, match="Run a text prompt first"):
        seg.session.run_adapt(("tiny", "cpu"))
    img, truth = synthetic_nuclei((224, 224), n=4, seed=0, diameter=60.0, touching=0)
    image = seg.viewer.add_image(img, name="cells")
    layer = _text_result(seg, image, threshold=0.5).layer
    layer.data = truth.astype(layer.data.dtype)  # the user's corrected masks
    seen = []
    seg.session.events.adapted.connect(lambda e: seen.append(e.value))
    try:
        seg.session.run_adapt(("tiny", "cpu"), AdaptSettings("nucleus", steps=20))
        adapted = seg.session.last_adapt
        assert seen == [adapted] and seg.said[-1] == adapted.message
        assert "held-out F1" in adapted.message
        assert adapted.adapter.meta["held_out"] == ["cells: 1 object(s)"]
        assert (seg.holder.adapter is adapted.adapter) == adapted.selected
        written = seg.session.save_adapter(tmp_path / "mine.sam3-adapter.safetensors")
        back = Sam3Adapter.load(written, engine.model.detector_model)
        assert back.meta["concept"] == "nucleus" and back.meta["after"] == adapted.after
    finally:
        engine.set_adapter(None)
    seg.session.run_text(seg.run(image), "nucleus, cell", True, L.FilterSettings())
    with pytest.raises(Sam3Error, match="one concept at a time"):
        seg.session.run_adapt(("tiny", "cpu"))


def test_reviewed_labels_train_without_their_rejected_objects():
    viewer = ViewerModel()
    img, lab = synthetic_nuclei((96, 96), seed=4, diameter=14)
    viewer.add_image(img, name="cells")
    ids = np.unique(lab)[1:]
    status = [REJECTED if i == ids[0] else "accepted" for i in ids]
    features = pd.DataFrame({"label": ids, STATUS_COLUMN: status})
    reviewed = viewer.add_labels(lab, name="SAM3: nucleus", features=features)
    ((name, image, plane),) = labelled_pairs(viewer, [reviewed])
    assert name == "cells" and image.shape == plane.shape == lab.shape
    assert ids[0] not in plane and set(np.unique(plane)[1:]) == set(ids[1:])


@pytest.mark.slow
def test_train_session_on_painted_labels(tmp_path):
    viewer = ViewerModel()
    images = [synthetic_nuclei((96, 96), seed=s, diameter=14) for s in (1, 2)]
    viewer.add_image(np.stack([i for i, _ in images]), name="nuclei")
    painted = viewer.add_labels(np.stack([lb for _, lb in images]).astype(np.int32), name="mine")
    runner = InlineSubmit()
    session = TrainSession(viewer, runner)
    trained = []
    session.events.trained.connect(lambda e: trained.append(e.lines))
    with pytest.raises(Sam3Error, match="no objects"):
        session.run(
            [viewer.add_labels(np.zeros((2, 96, 96), np.int32))], tmp_path / "x.safetensors"
        )
    out = tmp_path / "mine.safetensors"
    session.run([painted], out, steps=4)
    result = session.last
    assert result is not None and result.path == out and out.is_file()
    assert trained == [[result.summary, f"Saved {out}"]]
    # the guard's verdict names how many held-out objects it rests on (few here: it says so)
    n_held = int(result.meta["held_out_objects"])
    assert 0 < n_held < 50 and f"F1 on {n_held} held-out objects:" in result.summary
    assert "too few to show a gain" in result.summary
    assert runner.descs == ["Train on labels"] and runner.progress
