"""core.requests: a request checks itself once (CLI, batch, Python alike), and the count path is one
line (request -> iter_run -> counter): `count_stack`, the Count session and ``napari-sam3 count``
give the same labels on the same stack; huge planes are tiled on every path."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari.components import ViewerModel

from napari_sam3._napari import layers as L
from napari_sam3._napari.count_session import CountRequest as SessionCountRequest
from napari_sam3._napari.count_session import CountSession
from napari_sam3._napari.engine_holder import EngineHolder
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3.batch.settings import BatchSettings
from napari_sam3.core.counting import large_plane
from napari_sam3.core.counting.count import count_objects, count_stack
from napari_sam3.core.counting.run import iter_run
from napari_sam3.core.defaults import COUNT_SCORE_THRESHOLD, MASK_THRESHOLD
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.progress import run_to_end
from napari_sam3.core.requests import CountRequest
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.testing import InlineSubmit

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"method": "watershed"}, "learned', 'classical' or 'sam3'"),
        ({"diameter": 0}, "between 1 and 1000"),
        ({"diameter": "big"}, "number of pixels"),
        ({"method": "sam3"}, "concepts"),
        ({"method": "sam3", "concepts": "123"}, "no letters"),
        ({"method": "sam3", "concepts": "cell", "min_score": 1.5}, "min_score"),
        ({"method": "sam3", "concepts": "cell", "tile": 10}, "at least 64"),
        ({"method": "sam3", "concepts": "cell", "tile": "huge"}, "auto"),
        ({"polarity": "up"}, "auto, bright, dark"),
        ({"method": "classical", "net": "my.safetensors"}, "method 'learned'"),
        ({"net": "/no/such/net.safetensors"}, "does not exist"),
        ({"method": "sam3", "exemplars": [[0, 0, 5, 5]], "exemplar_labels": [0]}, "positive"),
        ({"method": "sam3", "exemplars": [[5, 0, 0, 5]]}, "X1 must exceed X0"),
        ({"min_size": -1}, "0 or more"),
    ],
)
def test_a_bad_request_fails_at_construction_naming_the_fix(kwargs, fix):
    with pytest.raises(Sam3Error, match=fix):
        CountRequest(**kwargs)


def test_a_request_is_normalised_once_and_frozen():
    r = CountRequest(method="sam3", concepts="nucleus, mitotic cell;nucleus", tile="128")
    assert r.concepts == ("nucleus", "mitotic cell") and r.tile == 128
    assert r.min_score == COUNT_SCORE_THRESHOLD and r.mask_threshold == MASK_THRESHOLD
    assert CountRequest(method="learned", concepts="123").concepts == ()  # ignored, not checked
    with pytest.raises(AttributeError):
        r.method = "classical"  # type: ignore[misc]
    # the Count tab's request is the core one plus where its boxes come from
    assert isinstance(SessionCountRequest(), CountRequest)
    SessionCountRequest(method="sam3", use_boxes=True)  # boxes are read at run time
    with pytest.raises(Sam3Error, match="concepts"):
        SessionCountRequest(method="sam3")


def test_batch_settings_from_python_validate_like_the_cli():
    with pytest.raises(Sam3Error, match="concepts"):
        BatchSettings(command="count", method="sam3")
    with pytest.raises(Sam3Error, match="polarity"):
        BatchSettings(command="count", method="classical", polarity="up")
    with pytest.raises(Sam3Error, match="at least 64"):
        BatchSettings(command="count", method="sam3", prompts=("cell",), tile=8)
    s = BatchSettings(command="count", method="sam3", prompts=("cell",))
    assert s.count_request().tile == "auto"  # count tiles SAM3 by default


def _session(image):
    viewer = ViewerModel()
    layer = viewer.add_image(image, name="nuclei")

    session = CountSession(viewer, EngineHolder(), InlineSubmit(), lambda step: step())
    ref = L.plane_ref(layer, viewer.dims.point, viewer.dims.displayed, 2)
    return session, PlaneRun(layer, ref, Preprocessing(), ("unused", "cpu"))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Same objects, whatever their ids: every object of ``a`` is exactly one of ``b``."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


@pytest.mark.slow
def test_count_stack_the_session_and_the_cli_give_the_same_labels(tmp_path):
    """One loop: the same stack through `count_stack`, the Count tab's all-slices count and
    ``napari-sam3 count`` (a subprocess) gives the same objects on every plane, at ONE diameter."""
    planes = [synthetic_nuclei((96, 96), seed=s, diameter=14)[0] for s in range(3)]
    stack = np.stack(planes)
    core = count_stack(stack, "classical")
    session, run = _session(stack)
    session.run_count(run, SessionCountRequest(method="classical", all_slices=True))
    out = session.last
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "ZYX"})
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    argv = ["count", str(path), "--method", "classical", "--out", str(tmp_path / "o")]
    cmd = [sys.executable, "-m", "napari_sam3.cli", *argv, "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cli = [tifffile.imread(p) for p in sorted((tmp_path / "o").glob("stack_z*_labels.tif"))]
    assert len(cli) == 3 and core.meta["diameter_source"] == "stack"
    assert out.slice_counts == core.plane_counts and min(core.plane_counts) > 5
    for k in range(3):
        assert _same_partition(core.labels[k], out.labels[k])
        assert _same_partition(core.labels[k], cli[k])


def test_a_huge_plane_is_tiled_on_the_session_path_too(monkeypatch):
    image, _ = synthetic_nuclei((200, 200), seed=4, diameter=14)
    whole = count_objects(image, "classical", diameter=14)
    monkeypatch.setattr(large_plane, "LARGE_PLANE_PIXELS", 150 * 150)  # "huge" for the test
    monkeypatch.setattr(large_plane, "TILE", 100)
    session, run = _session(image)
    session.run_count(run, SessionCountRequest(method="classical", diameter=14))
    out = session.last
    assert out.result.meta.get("large_plane") is True
    assert abs(out.count - whole.count) <= max(2, whole.count // 10) and out.count > 10
    assert out.labels_layer.data.shape == image.shape
    # and through the one loop directly, lazily (len + indexing only)
    res = run_to_end(iter_run(CountRequest(method="classical", diameter=14), _Lazy([image])))
    assert res.plane_results[0].meta.get("large_plane") is True and res.count == out.count


class _Lazy:
    def __init__(self, planes):
        self._planes = planes

    def __len__(self):
        return len(self._planes)

    def __getitem__(self, i):
        return self._planes[i]


def test_help_prints_the_request_defaults():
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "napari_sam3.cli", "count", "--help"]
    text = " ".join(subprocess.run(cmd, env=env, capture_output=True, text=True).stdout.split())
    r = CountRequest()
    from napari_sam3.cli import build_parser

    args = build_parser().parse_args(["count", "x.tif", "--out", "o"])
    assert args.method == r.method and args.polarity == r.polarity
    assert args.mask_threshold == r.mask_threshold and args.diameter == r.diameter
    assert f"(default {r.mask_threshold})" in text
    assert f"count --method sam3: {CountRequest(method='sam3', concepts='x').min_score}" in text
    # every flag left out is the request's default: the CLI's settings ARE the request's
    from napari_sam3.cli import settings_from_args, track_settings_from_args
    from napari_sam3.core.requests import SegmentRequest, TrackRequest

    def parsed(*argv):
        return build_parser().parse_args([*argv, "a.tif", "--out", "o"])

    io = {"model": None, "device": "auto", "overwrite": False, "adapter": None}
    seg = settings_from_args(parsed("segment", "--concepts", "c"))
    assert seg == BatchSettings.from_request(SegmentRequest(concepts="c"), **io)
    assert seg.segment_request() == SegmentRequest(concepts="c")
    cnt = settings_from_args(parsed("count", "--method", "sam3", "--concepts", "c"))
    assert cnt.count_request() == CountRequest(method="sam3", concepts="c")
    trk = track_settings_from_args(parsed("track", "--concepts", "c"))
    assert trk.track_request() == TrackRequest(concepts="c")


def test_concepts_is_the_name_and_prompt_still_works():
    from napari_sam3.core.counting.count import request_of

    assert request_of("sam3", prompt="cell, nucleus").concepts == ("cell", "nucleus")
    assert request_of("sam3", concepts="cell", prompt=None).concepts == ("cell",)
    # the CLI's old spellings: hidden from --help, still accepted, same request
    from napari_sam3.cli import build_parser, settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args([*argv, "a.tif", "--out", "o"]))

    old = settings("segment", "--prompt", "cell", "--threshold", "0.2")
    new = settings("segment", "--concepts", "cell", "--min-score", "0.2")
    assert old == new and new.prompts == ("cell",) and new.threshold == 0.2
    assert "--prompt" not in build_parser().format_help()
