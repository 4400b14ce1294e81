"""Sam3Engine on the tiny checkpoint: one backbone pass per image, prompts, caching, errors."""

import threading
import warnings

import numpy as np
import pytest

from napari_sam3.core.errors import Cancelled, Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.progress import Progress, run_to_end
from napari_sam3.core.prompts import NonEnglishPromptWarning, parse_concepts
from napari_sam3.core.results.candidates import Candidates, boxes_from_masks
from napari_sam3.core.sam3.encoded_image import expand_vision, vision_tensors
from napari_sam3.core.sam3.engine import EncodedImage, Sam3Engine
from napari_sam3.core.sam3.feature_cache import FeatureCache, make_key

_seed = iter(range(1000, 100000))


def fresh_plane(shape=(120, 160), dtype=np.uint8):
    """A plane no other test has encoded (so the cache cannot answer)."""
    rng = np.random.default_rng(next(_seed))
    img = rng.integers(0, 200, shape).astype(dtype)
    img[30:70, 40:90] += 50
    return img


@pytest.fixture
def backbone_passes(engine):
    """Counts real forward passes of THE vision backbone (a hook on the module, not our counter)."""
    calls = []
    handle = engine.model.detector_model.vision_encoder.backbone.register_forward_hook(
        lambda *a: calls.append(1)
    )
    yield calls
    handle.remove()


def delta(engine, before):
    return {k: engine.stats[k] - before[k] for k in engine.stats}


# ---------------------------------------------------------------- one encode
def test_text_exemplar_click_share_one_backbone_pass(engine, backbone_passes):
    plane = fresh_plane()
    before = dict(engine.stats)
    text = engine.segment_text(plane, "nucleus")
    ex = engine.segment_exemplars(plane, [[40, 30, 90, 70]], [1])
    both = engine.segment_exemplars(plane, [[40, 30, 90, 70], [0, 0, 20, 20]], [1, 0], text="cell")
    click = engine.segment_points(plane, [[60, 50]], [1])
    box = engine.segment_points(plane, box_xyxy=[40, 30, 90, 70])
    assert len(backbone_passes) == 1
    d = delta(engine, before)
    assert d["vision_encodes"] == 1
    assert d["cache_hits"] == 4
    assert d["detector_calls"] == 3 and d["tracker_calls"] == 2
    assert engine.model.tracker_model.vision_encoder is None  # no second backbone to run
    for c, kind in [
        (text, "text"),
        (ex, "exemplar"),
        (both, "exemplar"),
        (click, "points"),
        (box, "box"),
    ]:
        assert isinstance(c, Candidates) and c.kind == kind
        assert c.masks.dtype == bool and c.masks.shape[1:] == plane.shape


def test_two_concepts_one_encode_one_detector_call(engine, backbone_passes):
    plane = fresh_plane()
    before = dict(engine.stats)
    c = engine.segment_text(plane, "nucleus, mitotic cell")
    assert len(backbone_passes) == 1
    d = delta(engine, before)
    assert d["vision_encodes"] == 1 and d["detector_calls"] == 1
    assert set(c.prompts) <= {"nucleus", "mitotic cell"}
    assert c.concepts and len(c) > 0


def test_expanded_features_are_views(engine):
    enc = engine.encode(fresh_plane())
    view = expand_vision(enc.vision, 3)
    for a, b in zip(view.fpn_hidden_states, enc.vision.fpn_hidden_states, strict=True):
        assert a.shape[0] == 3 and a.data_ptr() == b.data_ptr() and a.stride(0) == 0


def test_text_features_cached_per_concept(engine):
    plane = fresh_plane()
    engine.segment_text(plane, "alpha thing, beta thing")
    before = dict(engine.stats)
    engine.segment_text(plane, "beta thing; gamma thing")
    assert delta(engine, before)["text_encodes"] == 1


def test_encode_cache_keys(engine, backbone_passes):
    plane = fresh_plane((64, 80), np.uint16)
    a = engine.encode(plane)
    assert engine.encode(plane.copy()) is a  # content, not identity
    b = engine.encode(plane, Preprocessing(percentiles=(1.0, 99.0)))
    assert b is not a  # preprocessing is part of the key
    assert len(backbone_passes) == 2
    assert a.shape == (64, 80) and a.nbytes > 0 and a.seconds >= 0
    assert engine.last_encode_seconds is not None
    assert a.key == make_key(a.key.split("|")[0], engine.model_key, Preprocessing(), None)


def test_encoded_image_can_stand_for_the_plane(engine, backbone_passes):
    plane = fresh_plane()
    enc = engine.encode(plane)
    c = engine.segment_text(enc, "cell")
    assert len(backbone_passes) == 1 and c.shape == plane.shape
    alien = EncodedImage("k", "another model", enc.shape, enc.vision, 0.0)
    with pytest.raises(Sam3Error, match="another model"):
        engine.segment_text(alien, "cell")


def test_cache_memory_bound_evicts(engine):
    small = Sam3Engine(engine._loaded, cache=FeatureCache(max_bytes=1))
    p1, p2 = fresh_plane(), fresh_plane()
    e1 = small.encode(p1)
    small.encode(p2)
    assert len(small.cache) == 1  # only the newest is kept
    assert small.encode(p1) is not e1
    assert small.stats["vision_encodes"] == 3


def test_tracker_embeddings_count_against_the_bound(engine):
    eng = Sam3Engine(engine._loaded, cache=FeatureCache())
    eng.precompute_tracker = False
    plane = fresh_plane()
    enc = eng.encode(plane)
    assert enc.tracker is None
    before = eng.cache.nbytes
    eng.segment_points(plane, [[10, 10]])
    vision_only = sum(t.element_size() * t.nelement() for t in vision_tensors(enc.vision))
    # the tracker levels are views of the video-layout ones (one storage, counted once), plus
    # the memory-free last level
    extra = sum(t.element_size() * t.nelement() for t in enc.tracker_video)
    extra += enc.tracker[-1].element_size() * enc.tracker[-1].nelement()
    assert before == vision_only
    assert eng.cache.nbytes == enc.nbytes == vision_only + extra


def test_tracker_embeddings_precomputed_at_encode(engine):
    """The default: the tracker neck runs with the encode, so a click needs no further image work."""
    eng = Sam3Engine(engine._loaded, cache=FeatureCache())
    plane = fresh_plane()
    enc = eng.encode(plane)
    assert enc.tracker is not None
    after_encode = eng.cache.nbytes
    assert after_encode == enc.nbytes
    tracker = enc.tracker
    eng.segment_points(plane, [[10, 10]])
    assert enc.tracker is tracker and eng.cache.nbytes == after_encode


# ---------------------------------------------------------------- text results
def test_text_candidates_contract(engine):
    plane = fresh_plane((90, 130))
    c = engine.segment_text(plane, ["nucleus", "cell"], min_score=0.1)
    assert len(c) > 0
    assert (c.scores >= 0.1).all() and (c.scores <= 1).all()
    assert np.all(np.diff(c.scores) <= 0)  # sorted, best first
    assert c.masks.shape == (len(c), 90, 130) and c.masks.dtype == bool
    np.testing.assert_array_equal(c.boxes, boxes_from_masks(c.masks))
    assert c.iou_scores is None
    assert c.meta["source"] == engine.source


def test_refiltering_needs_no_model_call(engine):
    plane = fresh_plane()
    low = engine.segment_text(plane, "cell", min_score=0.1)
    assert low.scores.min() < 0.3 < low.scores.max(), "tiny model scores should straddle 0.3"
    before = dict(engine.stats)
    refiltered = low.filter(0.3)
    assert delta(engine, before)["detector_calls"] == 0
    direct = engine.segment_text(plane, "cell", min_score=0.3)
    np.testing.assert_allclose(refiltered.scores, direct.scores, atol=1e-6)
    assert np.array_equal(refiltered.masks, direct.masks)


def test_min_score_zero_keeps_every_query(engine):
    c = engine.segment_text(fresh_plane(), "cell", min_score=0.0)
    assert len(c) == engine.model.config.detector_config.detr_decoder_config.num_queries


def test_float_plane_with_nan_runs(engine):
    plane = fresh_plane().astype(np.float32)
    plane[:10] = np.nan
    c = engine.segment_text(plane, "cell")
    assert c.shape == plane.shape


# ---------------------------------------------------------------- exemplars and clicks
def test_exemplars_without_text_are_labelled_exemplar(engine):
    c = engine.segment_exemplars(fresh_plane(), np.array([[40, 30, 90, 70]]))
    assert set(c.prompts) <= {"exemplar"} and c.kind == "exemplar"


def test_exemplars_with_two_concepts(engine):
    c = engine.segment_exemplars(fresh_plane(), [[40, 30, 90, 70]], text="cell, nucleus")
    assert set(c.prompts) <= {"cell", "nucleus"}


def test_exemplar_errors(engine):
    plane = fresh_plane()
    with pytest.raises(Sam3Error, match="positive"):
        engine.segment_exemplars(plane, [[40, 30, 90, 70]], [0])
    with pytest.raises(Sam3Error, match="empty or outside"):
        engine.segment_exemplars(plane, [[500, 500, 600, 600]])
    with pytest.raises(Sam3Error, match="labels"):
        engine.segment_exemplars(plane, [[40, 30, 90, 70]], [1, 1])
    with pytest.raises(Sam3Error, match="No box"):
        engine.segment_exemplars(plane, [])


def test_click_candidates(engine):
    plane = fresh_plane()
    c = engine.segment_points(plane, [[60, 50], [5, 5]], [1, 0])
    assert len(c) == 3 and c.kind == "points"
    np.testing.assert_array_equal(c.scores, c.iou_scores)
    assert np.all(np.diff(c.scores) <= 0)
    assert 0 <= c.meta["object_score"] <= 1
    one = engine.segment_points(plane, [[60, 50]], multimask=False)
    assert len(one) == 1
    # a 2-D list of one point, a flat point, and a numpy array all work
    flat = engine.segment_points(plane, [60, 50])
    np.testing.assert_allclose(
        flat.scores, engine.segment_points(plane, np.array([[60, 50]])).scores
    )


def test_click_errors(engine):
    plane = fresh_plane()
    with pytest.raises(Sam3Error, match="Click"):
        engine.segment_points(plane)
    with pytest.raises(Sam3Error, match="outside"):
        engine.segment_points(plane, [[1000, 5]])
    with pytest.raises(Sam3Error, match="label"):
        engine.segment_points(plane, [[10, 5]], [1, 0])
    with pytest.raises(Sam3Error, match="one box"):
        engine.segment_points(plane, box_xyxy=[[0, 0, 10, 10], [5, 5, 20, 20]])


# ---------------------------------------------------------------- prompt and plane validation
@pytest.mark.parametrize("text", ["", "   ", ",,;\n", "123, 4.5", "!!!", None, []])
def test_empty_or_letterless_prompts_are_refused(engine, text):
    with pytest.raises(Sam3Error) as err:
        engine.segment_text(fresh_plane((16, 16)), text)
    assert "prompt" in str(err.value)


def test_parse_concepts():
    assert parse_concepts("nucleus, mitotic cell;nucleus\n  Round  cell ") == [
        "nucleus",
        "mitotic cell",
        "Round cell",
    ]
    assert parse_concepts(["a cell", "b, a cell"]) == ["a cell", "b"]
    with pytest.raises(Sam3Error, match="no letters"):
        parse_concepts("cell, 42")


def test_non_english_prompt_warns_but_runs(engine):
    with pytest.warns(NonEnglishPromptWarning, match="English"):
        c = engine.segment_text(fresh_plane(), "細胞, cell")
    assert isinstance(c, Candidates)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_concepts("cell")  # plain English: no warning


@pytest.mark.parametrize(
    "plane, match",
    [
        (np.zeros((1, 1), np.uint8), "pixels"),
        (np.zeros((2, 2, 2, 8, 8), np.uint8), "shape"),
        (np.full((32, 32), np.nan, np.float32), "finite"),
        (np.array([["a"]]), "numeric"),
    ],
    ids=["1x1", "5-D", "all-NaN", "strings"],
)
def test_bad_planes(engine, plane, match):
    with pytest.raises(Sam3Error, match=match):
        engine.segment_text(plane, "cell")
    with pytest.raises(Sam3Error, match=match):
        engine.segment_points(plane, [[0, 0]])


def test_threshold_validation(engine):
    with pytest.raises(Sam3Error, match="min_score"):
        engine.segment_text(fresh_plane(), "cell", min_score=2)


# ---------------------------------------------------------------- generators, threads, loading
def test_iter_text_yields_progress_then_returns(engine):
    gen = engine.iter_text(fresh_plane(), "cell")
    reports = []
    result = run_to_end(gen, on_progress=reports.append)
    assert isinstance(result, Candidates)
    assert reports and all(isinstance(r, Progress) for r in reports)
    assert any("Encoding" in r.message for r in reports)


@pytest.mark.parametrize("method", ["iter_text", "iter_exemplars", "iter_points"])
def test_cancel_stops_the_run(engine, method):
    cancel = threading.Event()
    cancel.set()
    plane = fresh_plane()
    args = {
        "iter_text": ("cell",),
        "iter_exemplars": ([[40, 30, 90, 70]],),
        "iter_points": ([[5, 5]],),
    }
    gen = getattr(engine, method)(plane, *args[method])
    before = dict(engine.stats)
    with pytest.raises(Cancelled):
        run_to_end(gen, cancel=cancel)
    d = delta(engine, before)
    assert d["detector_calls"] == 0 and d["tracker_calls"] == 0


def test_concurrent_prompts_from_threads(engine):
    plane = fresh_plane()
    out, errors = [], []

    def work():
        try:
            out.append(engine.segment_text(plane, "cell, nucleus"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c in out[1:]:
        np.testing.assert_array_equal(c.scores, out[0].scores)


def test_load_returns_the_same_engine(engine, tiny_checkpoint):
    assert Sam3Engine.load(str(tiny_checkpoint), device="cpu") is engine
    assert engine.device.type == "cpu" and engine.source == str(tiny_checkpoint)
    assert set(engine.stats) >= {
        "vision_encodes",
        "text_encodes",
        "detector_calls",
        "tracker_calls",
    }


def test_position_encodings_shared_between_cached_images(engine):
    a = engine.encode(fresh_plane())
    b = engine.encode(fresh_plane((50, 70)))
    for x, y in zip(a.vision.fpn_position_encoding, b.vision.fpn_position_encoding, strict=True):
        assert x is y
    # the tracker neck's position encodings are shared too
    assert engine.tracker_video_features(a)[1] is engine.tracker_video_features(b)[1]
    # owned: backbone tokens, FPN levels, the tracker's video-layout levels (the single-image
    # embeddings are views of them) and the single-image last level (+ no-memory embedding)
    assert a.nbytes == sum(
        t.element_size() * t.nelement()
        for t in (
            a.vision.last_hidden_state,
            *a.vision.fpn_hidden_states,
            *a.tracker_video,
            a.tracker[-1],
        )
    )


def test_bfloat16_engine_runs_every_prompt(tiny_checkpoint):
    """CUDA's default dtype is bfloat16; the same code path runs on the CPU here."""
    import torch

    eng = Sam3Engine.load(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert eng.dtype == torch.bfloat16
    plane = fresh_plane()
    text = eng.segment_text(plane, "cell, nucleus", min_score=0.0)
    ex = eng.segment_exemplars(plane, [[40, 30, 90, 70], [0, 0, 20, 20]], [1, 0], text="cell")
    click = eng.segment_points(plane, [[60, 50]], [1], box_xyxy=[40, 30, 90, 70])
    for c in (text, ex, click):
        assert c.scores.dtype == np.float32 and np.isfinite(c.scores).all()
        assert c.masks.shape[1:] == plane.shape
    assert eng.stats["vision_encodes"] == 1


def test_out_of_memory_becomes_a_sam3error(engine, monkeypatch):
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def boom(**kwargs):
        raise oom("out of memory")

    monkeypatch.setattr(engine.model.detector_model, "get_vision_features", boom)
    with pytest.raises(Sam3Error, match="Out of CPU memory while encoding"):
        engine.encode(fresh_plane())


# ---------------------------------------------------------------- core.cache
def test_feature_cache_lru_and_bounds(monkeypatch):
    c = FeatureCache(max_bytes=100, max_items=3)
    c.put("a", "A", 40)
    c.put("b", "B", 40)
    assert c.get("a") == "A"  # a is now the most recent
    c.put("c", "C", 40)  # 120 bytes > 100: evicts the least recent (b)
    assert "b" not in c and c.get("a") == "A" and c.get("c") == "C"
    assert c.nbytes == 80 and c.get("zzz") is None
    assert (c.hits, c.misses, c.evictions) == (3, 1, 1)
    c.put("d", "D", 1)
    c.put("e", "E", 1)
    assert len(c) == 3 and "a" not in c  # max_items
    c.put("huge", "H", 10_000)
    assert c.keys() == ["huge"]  # the newest entry is kept even when alone too big
    c.resize(max_bytes=0)
    assert len(c) == 0 and c.nbytes == 0
    monkeypatch.setenv("NAPARI_SAM3_CACHE_MB", "1.5")
    assert FeatureCache().max_bytes == int(1.5 * 1024**2)


def test_cache_keys_separate_models_and_preprocessing():
    p = Preprocessing()
    assert make_key("h", "m1", p) != make_key("h", "m2", p)
    assert make_key("h", "m1", p) != make_key("h", "m1", Preprocessing(channel=0))
    assert make_key("h", "m1", p) != make_key("h", "m1", p, rgb=True)
    assert make_key("h", "m1", p) == make_key("h", "m1", Preprocessing())


def test_same_plane_from_two_threads_is_encoded_once(engine, backbone_passes):
    plane = fresh_plane()
    out = []
    threads = [threading.Thread(target=lambda: out.append(engine.encode(plane))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(backbone_passes) == 1
    assert all(e is out[0] for e in out)
