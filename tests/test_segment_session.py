"""The Segment session without Qt: a napari ViewerModel, the tiny checkpoint and a synchronous runner.

`SegmentSession` / `ClickSession` hold the run state the Qt tab only wires; here they run the real
engine with jobs driven inline, so what a text run, a re-filter, clicks and a commit leave behind is
checked with no widget and no event loop.
"""

import subprocess
import sys

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_sam3._napari import layers as L
from napari_sam3._napari.click_session import NEW_TARGET
from napari_sam3._napari.engine_holder import EngineHolder
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.segment_session import SegmentSession
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.testing import InlineSubmit


def _image(shape=(64, 80)):
    rng = np.random.default_rng(0)
    img = rng.normal(40, 8, shape)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    for cy, cx in [(16, 20), (40, 55), (30, 30)]:
        img[..., (yy - cy) ** 2 + (xx - cx) ** 2 < 60] += 120
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture
def session(engine):
    viewer = ViewerModel()
    image = viewer.add_image(_image(), name="cells", scale=(0.5, 0.25), translate=(2, 3))
    runner = InlineSubmit()
    holder = EngineHolder(loader=lambda source, device: engine)
    session = SegmentSession(viewer, holder, runner, runner, lambda step: step())
    said = []
    session.events.status.connect(lambda e: said.append(e.value))
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    run = PlaneRun(image, ref, Preprocessing(), ("tiny", "cpu"))
    return session, run, runner, said


def test_text_run_then_refilter_drive_one_layer(session, engine):
    session, run, runner, said = session
    low = L.FilterSettings(min_score=0.1)
    session.run_text(run, "nucleus", True, low)
    res = session.last_text
    expected = engine.segment_text(run.image.data, "nucleus").filter(0.1).sorted_by_score()
    assert res is not None and res.layer in session.viewer.layers
    feats = res.layer.features
    assert res.layer.name == "nucleus · cells" and len(feats) == len(expected) > 0
    np.testing.assert_allclose(res.layer.scale, (0.5, 0.25))
    np.testing.assert_allclose(res.layer.translate, (2, 3))
    np.testing.assert_allclose(feats["score"], expected.scores, rtol=1e-5)
    assert list(feats["area"]) == list(expected.areas)
    assert list(feats["index"]) == list(range(1, len(expected) + 1))
    np.testing.assert_allclose(feats["area_physical"], expected.areas * 0.125)
    # hovering a labelled pixel shows prompt and score in the status bar
    ys, xs = np.nonzero(res.layer.data)
    status = res.layer.get_status((ys[0], xs[0]))["coordinates"]
    assert "prompt: nucleus" in status and "score: " in status
    assert said[-1].startswith(f"{len(expected)} objects ({len(res.raw)} candidates")
    assert "'nucleus · cells'" in session.driven_text()
    before = dict(engine.stats)
    session.refilter(L.FilterSettings(min_score=0.99))
    assert session.last_text.layer is res.layer and len(res.layer.features) == 0
    assert engine.stats == before and runner.descs[-1] == "SAM3: re-filter"


def test_clicks_candidates_cycle_and_commit_into_annotations(session):
    session, run, _, said = session
    clicks_session = session.clicks
    texts = []
    clicks_session.events.candidate.connect(lambda e: texts.append(e.value))
    clicks, _ = clicks_session.add_prompt_layers(run.image, run.ref)
    assert clicks_session.preview_layer in session.viewer.layers
    clicks.add([16, 20])
    clicks_session.run_clicks(run.image, run.ref, False, run.preprocessing, run.model)
    res = clicks_session.last_clicks
    assert len(res.cands) == 3 and texts[-1].startswith(f"Candidate {res.index + 1}/3")
    first = res.index
    clicks_session.next_candidate()
    assert res.index == (first + 1) % 3
    mask = clicks_session.candidate_mask()
    assert clicks_session.commit(NEW_TARGET, clear_boxes=False) == 1
    target = session.viewer.layers["cells annotations"]
    assert (np.asarray(target.data) == 1).sum() == mask.sum() > 0
    assert len(clicks.data) == 0 and clicks_session.last_clicks is None
    assert said[-1].startswith("Committed as label 1 in 'cells annotations'")
    assert clicks_session.commit(NEW_TARGET, clear_boxes=False) == 0  # nothing shown any more
    target.name = "renamed"  # the image's annotations layer is still found (by its metadata)
    clicks.add([40, 55])
    clicks_session.run_clicks(run.image, run.ref, False, run.preprocessing, run.model)
    assert clicks_session.commit(NEW_TARGET, clear_boxes=False) == 2
    assert (np.asarray(target.data) == 2).any() and len(session.viewer.layers) == 5


def test_commit_into_a_chosen_layer_writes_only_empty_pixels_and_undoes(session, engine):
    session, run, _, said = session
    clicks_session = session.clicks
    target = session.viewer.add_labels(np.zeros((64, 80), np.uint16), name="manual")
    target.data[0:5, 0:5] = 3
    target.data[14:18, 18:22] = 5  # overlaps the clicked object
    assert clicks_session.commit_targets("cells")[1:] == ["manual"]  # not the preview
    clicks, _ = clicks_session.add_prompt_layers(run.image, run.ref)
    assert clicks.ndim == run.image.ndim
    calls = engine.stats["tracker_calls"]
    clicks.add([16, 20])
    clicks_session.run_clicks(run.image, run.ref, False, run.preprocessing, run.model)
    assert engine.stats["tracker_calls"] == calls + 1
    mask = clicks_session.candidate_mask()
    before = np.array(target.data)
    assert clicks_session.commit("manual", clear_boxes=False) == 6
    after = np.array(target.data)
    changed = after != before
    assert (after[changed] == 6).all() and (before[changed] == 0).all()
    assert changed.sum() == (mask & (before == 0)).sum() > 0
    target.undo()  # Ctrl+Z on the target layer
    assert (np.array(target.data) == before).all()
    assert said[-1] == "Label 6 in 'manual' was undone: nothing committed now."


def test_nd_run_and_commit_touch_only_the_slice_shown(engine):
    viewer = ViewerModel()
    stack = np.stack([np.roll(_image(), 9 * s, axis=1) for s in range(4)])  # differ per slice
    image = viewer.add_image(stack, name="stack", scale=(3.0, 0.5, 0.5), translate=(1, 0, 0))
    k = 2
    viewer.dims.set_point(0, 1 + 3.0 * k)
    runner = InlineSubmit()
    holder = EngineHolder(loader=lambda source, device: engine)
    session = SegmentSession(viewer, holder, runner, runner, lambda step: step())
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    run = PlaneRun(image, ref, Preprocessing(), ("tiny", "cpu"))
    assert ref.index == (k,)
    session.run_text(run, "nucleus", True, L.FilterSettings(min_score=0.1))
    layer = session.last_text.layer
    assert layer.data.shape == (1, 64, 80) and layer.name == "nucleus [2] · stack"
    np.testing.assert_allclose(layer.data_to_world((0, 5, 7)), image.data_to_world((k, 5, 7)))
    expected = engine.segment_text(stack[k], "nucleus").filter(0.1).sorted_by_score()
    np.testing.assert_allclose(layer.features["score"], expected.scores, rtol=1e-5)
    assert set(layer.features["slice"]) == {"2"}
    # a click commit on slice k into a full-size target touches slice k only
    clicks, _ = session.clicks.add_prompt_layers(image, ref)
    clicks.add([k, 16, 20])
    session.clicks.run_clicks(image, ref, False, run.preprocessing, run.model)
    assert session.clicks.commit(NEW_TARGET, clear_boxes=False) == 1
    target = viewer.layers["stack annotations"]
    assert target.data.shape == stack.shape
    np.testing.assert_allclose(target.scale, image.scale)
    nz = np.nonzero(target.data)[0]
    assert nz.size and set(nz) == {k}


def test_bad_requests_raise_what_to_fix_and_a_removed_image_drops_the_result(session):
    session, run, runner, said = session
    with pytest.raises(Sam3Error, match="Type a concept"):
        session.run_text(run, "", True, L.FilterSettings())
    with pytest.raises(Sam3Error, match="z or t stack"):
        session.run_track(run, "nucleus", 0.1)
    runner.hold = True
    session.run_text(run, "nucleus", True, L.FilterSettings(min_score=0.1))
    session.viewer.layers.remove(run.image)
    runner.run_waiting()
    assert session.last_text is None and len(session.viewer.layers) == 0
    # the status line says so (no progress line left standing)
    assert said[-1] == "The image 'cells' was removed during the run; result dropped."


def test_sessions_load_no_qt():
    """The sessions and a ViewerModel in a fresh process: no Qt binding gets imported."""
    code = (
        "import sys\n"
        "import napari_sam3._napari.segment_session, napari_sam3._napari.count_session\n"
        "from napari.components import ViewerModel\n"
        "ViewerModel()\n"
        "qt = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in qt)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout
