"""``napari-sam3 track`` end to end on the tiny random VIDEO checkpoint (real model code, no mocks).

Tracking is the slow part on a CPU, so one module-level run (a 3-frame stack and a 2-D image) is
shared; the other tests rerun into copies of its output folder, or fail before any tracking.
"""

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam3.batch.track_inputs import read_stacks
from napari_sam3.cli import main
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.tracking.stack_tracking import TRACK_COLUMNS, track_stack
from napari_sam3.io import read_labels_tiff, read_table_csv

FRAMES, H, W = 3, 40, 52


@pytest.fixture(scope="module")
def video_checkpoint():
    from napari_sam3.testing import tiny_checkpoint_dir

    return tiny_checkpoint_dir(video=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A calibrated 3-frame t stack with a drifting bright object, and a 2-D image."""
    d = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(3)
    img = rng.integers(0, 3000, (FRAMES, H, W)).astype(np.uint16)
    img[:, 10:25, 12:30] += 20000
    for t in range(FRAMES):
        img[t] = np.roll(img[t], t, axis=1)
    tifffile.imwrite(
        d / "movie.tif",
        img,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TYX", "unit": "micron"},
    )
    tifffile.imwrite(d / "flat.tif", img[0])
    return d, img


def track(files, out, ckpt, *extra):
    """Run the CLI in-process; returns (exit code, stderr)."""
    argv = [
        "track",
        *map(str, files),
        "--prompt",
        "cell",
        "--model",
        str(ckpt),
        "--device",
        "cpu",
        "--threshold",
        "0.0",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def outputs(out):
    """Bytes and mtimes of the per-stack outputs and records (not the run-level files)."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    keep = [p for p in files if p.name not in ("tracks.csv", "tracks_manifest.json")]
    return {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in keep}


@pytest.fixture(scope="module")
def first_run(inputs, video_checkpoint, tmp_path_factory):
    d, _ = inputs
    out = tmp_path_factory.mktemp("run") / "out"
    code, err = track([d / "movie.tif", d / "flat.tif"], out, video_checkpoint)
    return out, code, err


@pytest.mark.slow
def test_track_writes_what_track_stack_gives(first_run, inputs, video_checkpoint):
    from napari_sam3.core.sam3.engine import Sam3Engine

    out, code, err = first_run
    _, img = inputs
    assert code == 1  # the 2-D image failed, the stack is done
    assert "Traceback" not in err
    assert "1 done, 0 already complete, 1 failed" in err
    # the same (cached) engine and settings directly through the core API
    engine = Sam3Engine.load(str(video_checkpoint), device="cpu")
    ref = track_stack(engine, img, ["cell"], min_score=0.0)
    assert ref.n_tracks > 0, "min_score=0 must give objects even with random weights"
    labels = read_labels_tiff(out / "movie_tracks.tif")
    assert labels.data.shape == (FRAMES, H, W) and labels.data.dtype == np.uint16
    assert labels.axes == "TYX"
    assert labels.data.tobytes() == ref.labels.astype(np.uint16).tobytes()
    assert labels.scale == pytest.approx((1.0, 0.5, 0.5))  # pixel size kept
    with tifffile.TiffFile(out / "movie_tracks.tif") as tif:
        assert tif.is_imagej  # Fiji opens it as a hyperstack
    table = read_table_csv(out / "movie_tracks.csv")
    assert tuple(table.columns) == TRACK_COLUMNS
    pd.testing.assert_frame_equal(table, ref.table, check_dtype=False)
    # run-level summary and manifest; the completion record of the stack
    summary = pd.read_csv(out / "tracks.csv", dtype={"slice": str}, keep_default_na=False)
    row = summary.set_index("stem").loc["movie"]
    assert int(row["frames"]) == FRAMES and int(row["tracks"]) == ref.n_tracks
    assert row["status"] == "done" and float(row["seconds"]) > 0
    assert summary.set_index("stem").loc["flat", "status"] == "failed"
    man = json.loads((out / "tracks_manifest.json").read_text())
    assert man["tool"] == "napari-sam3 track"
    assert man["settings"]["prompts"] == ["cell"] and man["settings"]["threshold"] == 0.0
    assert man["summary"] == {"stacks": 2, "done": 1, "skipped": 0, "failed": 1}
    rec = json.loads((out / ".done" / "movie_tracks.json").read_text())
    assert rec["status"] == "done" and rec["tracks"] == ref.n_tracks


def test_single_plane_fails_with_the_fix(first_run):
    out, _, err = first_run
    assert "FAILED" in err and "flat.tif" in err
    assert "a single plane: use `napari-sam3 segment`" in err
    assert not (out / "flat_tracks.tif").exists()
    man = json.loads((out / "tracks_manifest.json").read_text())
    failed = {s["stem"]: s["error"] for s in man["stacks"] if s["status"] == "failed"}
    assert set(failed) == {"flat"} and "napari-sam3 segment" in failed["flat"]


def test_rerun_skips_complete_and_never_overwrites(
    first_run, inputs, video_checkpoint, tmp_path, monkeypatch
):
    d, _ = inputs
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out, copy_function=shutil.copy2)
    before = outputs(out)

    # the same command again: the stack is complete, nothing is tracked or written
    def no_tracking(*args, **kwargs):
        raise AssertionError("a complete stack was tracked again")

    monkeypatch.setattr("napari_sam3.core.tracking.stack_tracking.iter_track_stack", no_tracking)
    code, err = track([d / "movie.tif"], out, video_checkpoint)
    assert code == 0, err
    assert "0 done, 1 already complete, 0 failed" in err
    assert outputs(out) == before  # same bytes, same modification times
    # other settings into the same folder: refused, nothing changed, the fix is named
    code, err = track([d / "movie.tif"], out, video_checkpoint, "--start", "1")
    assert code == 1
    assert "different settings" in err and "--overwrite" in err
    assert outputs(out) == before
    # files nobody's run wrote: refused without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "movie_tracks.csv").write_text("precious")
    code, err = track([d / "movie.tif"], mine, video_checkpoint)
    assert code == 1 and "did not write" in err and "--overwrite" in err
    assert (mine / "movie_tracks.csv").read_text() == "precious"
    assert not (mine / "movie_tracks.tif").exists()


def test_usage_errors_exit_2_without_traceback(inputs, video_checkpoint, tmp_path):
    d, _ = inputs
    movie = d / "movie.tif"
    out = tmp_path / "o"
    for bad in (["--threshold", "1.5"], ["--threshold", "-0.1"], ["--start", "-1"]):
        code, err = track([movie], out, video_checkpoint, *bad)
        assert code == 2, bad
        assert bad[0] in err and "Traceback" not in err
    code, err = track([movie], out, video_checkpoint, "--axis", "two")
    assert code == 2 and "--axis" in err
    err_io = io.StringIO()
    with contextlib.redirect_stderr(err_io):
        assert main(["track", str(movie), "--out", str(out), "--no-progress"]) == 2
    assert "--concepts" in err_io.getvalue()
    assert not out.exists()  # refused before anything was written


def test_missing_model_folder_names_the_fix(inputs, tmp_path):
    d, _ = inputs
    missing = tmp_path / "no-such-model"
    code, err = track([d / "movie.tif"], tmp_path / "o", missing)
    assert code == 2
    assert "does not exist" in err and "NAPARI_SAM3_MODEL" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "movie_tracks.tif").exists()
    assert not list((tmp_path / "o" / ".done").glob("*.json"))  # no record left behind


def test_checkpoint_that_cannot_track_exits_2(inputs, tiny_checkpoint, tmp_path):
    d, _ = inputs
    code, err = track([d / "movie.tif"], tmp_path / "o", tiny_checkpoint)
    assert code == 2 and "cannot track" in err and "Traceback" not in err


def test_failed_stack_leaves_no_claim(inputs, video_checkpoint, tmp_path):
    d, img = inputs
    out = tmp_path / "o"
    code, err = track([d / "movie.tif"], out, video_checkpoint, "--start", str(FRAMES))
    assert code == 1 and "past the last frame" in err
    bad = tmp_path / "nan.tif"
    frames = img.astype(np.float32)
    frames[1] = np.nan
    tifffile.imwrite(bad, frames, metadata={"axes": "TYX"})
    code, err = track([bad], out, video_checkpoint)
    assert code == 1 and "Frame 1" in err and "Traceback" not in err
    # nothing written, no started record: a corrected rerun is not "other settings"
    assert not list(out.glob("*_tracks.*")) and not list((out / ".done").glob("*.json"))


def test_more_than_one_stack_axis_needs_axis(inputs, video_checkpoint, tmp_path):
    d, img = inputs
    hyper = tmp_path / "hyper.tif"
    tifffile.imwrite(hyper, np.stack([img, img]), imagej=True, metadata={"axes": "TZYX"})
    code, err = track([hyper], tmp_path / "o", video_checkpoint)
    assert code == 1
    assert "--axis 0 (T) or --axis 1 (Z)" in err and "Traceback" not in err


def test_read_stacks_axis_choice(inputs, tmp_path):
    _, img = inputs
    hyper = tmp_path / "hyper.tif"
    data = np.stack([img, img + 1])  # (T=2, Z=3, H, W)
    tifffile.imwrite(
        hyper,
        data,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TZYX", "spacing": 3.0, "unit": "micron"},
    )
    with pytest.raises(Sam3Error, match="--axis 0"):
        read_stacks(hyper, "hyper")
    by_z = read_stacks(hyper, "hyper", "Z")  # track along z, one stack per time point
    assert [s.stem for s in by_z] == ["hyper_t000", "hyper_t001"]
    assert [s.slice_label for s in by_z] == ["t=0", "t=1"]
    assert by_z[1].axes == "ZYX" and by_z[1].scale == pytest.approx((3.0, 0.5, 0.5))
    np.testing.assert_array_equal(by_z[1].data, data[1])
    by_t = read_stacks(hyper, "hyper", 0)  # the same by index: along t, one stack per z
    assert [s.stem for s in by_t] == ["hyper_z000", "hyper_z001", "hyper_z002"]
    assert by_t[2].axes == "TYX"
    np.testing.assert_array_equal(by_t[2].data, data[:, 2])
    for bad in (2, "C"):
        with pytest.raises(Sam3Error, match="not a stack axis"):
            read_stacks(hyper, "hyper", bad)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((FRAMES, H, W, 3), np.uint8), photometric="rgb")
    (stack,) = read_stacks(rgb, "rgb")
    assert stack.rgb and stack.data.shape == (FRAMES, H, W, 3) and stack.stem == "rgb"


@pytest.mark.slow
@pytest.mark.timeout(
    300
)  # two worker processes load the model: ~30 s idle, ~110 s on a busy machine
@pytest.mark.slow
def test_dask_workers_equal_single_process(inputs, video_checkpoint, tiny_checkpoint, tmp_path):
    pytest.importorskip("distributed")
    d, img = inputs
    second = tmp_path / "second.tif"
    tifffile.imwrite(second, np.ascontiguousarray(img[:, ::-1]), metadata={"axes": "TYX"})
    files = [d / "movie.tif", second]
    single, multi = tmp_path / "single", tmp_path / "dask"
    code, err = track(files, single, video_checkpoint)
    assert code == 0, err
    code, err = track(files, multi, video_checkpoint, "--workers", "2")
    assert code == 0, err
    assert "2 done, 0 already complete, 0 failed" in err and "Traceback" not in err
    for stem in ("movie", "second"):
        a, b = single / f"{stem}_tracks.tif", multi / f"{stem}_tracks.tif"
        assert a.read_bytes() == b.read_bytes(), stem  # byte-identical labels
        assert (single / f"{stem}_tracks.csv").read_text() == (
            multi / f"{stem}_tracks.csv"
        ).read_text()
        rec = json.loads((multi / ".done" / f"{stem}_tracks.json").read_text())
        assert rec["status"] == "done"  # the worker wrote the completion record
    ta, tb = (
        pd.read_csv(o / "tracks.csv", dtype={"slice": str}, keep_default_na=False)
        for o in (single, multi)
    )
    cols = ["file", "stem", "slice", "frames", "tracks", "status", "error"]  # not seconds
    pd.testing.assert_frame_equal(ta[cols], tb[cols])
    assert (ta["tracks"] > 0).all()  # objects were tracked: the comparison is not of empty labels
    ma, mb = (json.loads((o / "tracks_manifest.json").read_text()) for o in (single, multi))
    assert ma["summary"] == mb["summary"] == {"stacks": 2, "done": 2, "skipped": 0, "failed": 0}
    assert ma["stacks"] == mb["stacks"]
    # the workers' records are valid: a rerun (single process) skips both stacks
    code, err = track(files, multi, video_checkpoint)
    assert code == 0 and "0 done, 2 already complete, 0 failed" in err
    # a model that cannot track, loaded in a worker: the run stops with exit 2, no records
    code, err = track(files, tmp_path / "fatal", tiny_checkpoint, "--workers", "1")
    assert code == 2 and "cannot track" in err and "Traceback" not in err
    assert not list((tmp_path / "fatal" / ".done").glob("*.json"))


def test_workers_must_be_positive(inputs, video_checkpoint, tmp_path):
    d, _ = inputs
    code, err = track([d / "movie.tif"], tmp_path / "o", video_checkpoint, "--workers", "0")
    assert code == 2 and "--workers" in err and "Traceback" not in err
    code, err = track(
        [d / "movie.tif"], tmp_path / "o", video_checkpoint, "--workers", "2", "--dask", "x"
    )
    assert code == 2 and "not allowed with" in err
    assert not (tmp_path / "o").exists()
