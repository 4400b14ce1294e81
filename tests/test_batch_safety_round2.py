"""Issue 19, CLI / batch / core API cases: each one through the real ``napari-sam3`` entry point
(a subprocess) where a user meets it, or the public Python API.

Counting uses ``--method classical`` (the same run loop, records and export as segment, no model).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam3.core.defaults import (
    COUNT_SCORE_THRESHOLD,
    MASK_THRESHOLD,
    MAX_DIAMETER,
    MIN_DIAMETER,
    SCORE_THRESHOLD,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.synthetic import synthetic_nuclei

EXE = str(Path(sys.executable).parent / "napari-sam3")


def cli(*args, timeout: float = 120, env_extra: dict | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [EXE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )


def count(inputs, out, *extra, **kw):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return cli(
        "count", *inputs, "--method", "classical", "--diameter", "16", "--out", out,
        "--no-progress", *extra, **kw,
    )  # fmt: skip


def nuclei(path: Path, seed: int, shape=(72, 72)) -> np.ndarray:
    img = synthetic_nuclei(shape, seed=seed)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, img)
    return img


def rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "counts.csv")


# ------------------------------------------------------------------- 1 + 2: names own their source
@pytest.mark.slow
def test_same_name_from_another_folder_in_a_later_run_keeps_both(tmp_path):
    x, y, out = tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif", tmp_path / "o"
    nuclei(x, 1)
    nuclei(y, 2)
    st = x.stat()
    os.utime(y, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, other pixels
    assert x.stat().st_size == y.stat().st_size
    assert count(x, out).returncode == 0
    first = (out / "s_labels.tif").read_bytes()
    res = count(y, out)
    assert res.returncode == 0, res.stderr
    assert "1 done" in res.stderr and "already complete" not in res.stderr.split("done")[0]
    assert (out / "s_labels.tif").read_bytes() == first  # x's labels untouched
    assert (out / "y_s_labels.tif").exists()  # y under a name of its own
    table = rows(out)
    assert sorted(table["source"].map(lambda p: Path(p).parent.name)) == ["x", "y"]
    rec = json.loads((out / ".done" / "y_s.json").read_text())
    assert rec["source"] == str(y.resolve()) and len(rec["source_file"]["sha256"]) == 64


@pytest.mark.slow
def test_subset_rerun_keeps_the_names_of_the_full_run(tmp_path):
    x, y, out = tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif", tmp_path / "o"
    nuclei(x, 1)
    nuclei(y, 2)
    assert count([x, y], out).returncode == 0
    assert sorted(p.name for p in out.glob("*_labels.tif")) == ["x_s_labels.tif", "y_s_labels.tif"]
    res = count(x, out)
    assert res.returncode == 0, res.stderr
    assert "0 done, 1 already complete" in res.stderr
    assert not (out / "s_labels.tif").exists()  # no `s` vs `x_s` flip
    table = rows(out)
    assert len(table) == 2 and table["source"].is_unique  # no file counted twice


@pytest.mark.slow
def test_first_name_stays_when_the_second_folder_joins(tmp_path):
    x, y, out = tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif", tmp_path / "o"
    nuclei(x, 1)
    nuclei(y, 2)
    assert count(x, out).returncode == 0
    res = count([x, y], out)
    assert res.returncode == 0, res.stderr
    assert "1 done, 1 already complete" in res.stderr
    assert sorted(p.name for p in out.glob("*_labels.tif")) == ["s_labels.tif", "y_s_labels.tif"]
    assert len(rows(out)) == 2


# ------------------------------------------------------------------- 5: one set of defaults
def test_help_prints_the_constants_and_segment_keeps_its_own_default(tmp_path):
    seg = cli("segment", "--help").stdout
    cnt = cli("count", "--help").stdout
    trk = cli("track", "--help").stdout
    flat = [" ".join(t.split()) for t in (seg, cnt, trk)]
    for text in flat[:2]:
        assert f"minimum score (default {SCORE_THRESHOLD}; count --method sam3: " in text
        assert f"{COUNT_SCORE_THRESHOLD})" in text
        assert f"mask binarisation threshold (default {MASK_THRESHOLD})" in text
    assert f"start a track (default {SCORE_THRESHOLD})" in flat[2]
    from napari_sam3.cli import build_parser, settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args([*argv, "a.tif", "--out", "o"]))

    # the count parser's default does not leak into segment (argparse shares parent actions)
    assert settings("segment", "--prompt", "cell").threshold == SCORE_THRESHOLD
    assert settings("count", "--method", "sam3", "--prompt", "c").threshold == COUNT_SCORE_THRESHOLD
    assert settings("segment", "--prompt", "cell").mask_threshold == MASK_THRESHOLD


@pytest.mark.slow
def test_segment_manifest_records_the_default_threshold(tmp_path, tiny_checkpoint):
    nuclei(tmp_path / "a.tif", 1)
    out = tmp_path / "o"
    res = cli(
        "segment", tmp_path / "a.tif", "--prompt", "cell", "--model", tiny_checkpoint,
        "--out", out, "--no-progress", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["threshold"] == SCORE_THRESHOLD
    assert settings["mask_threshold"] == MASK_THRESHOLD


def test_no_literal_thresholds_outside_defaults():
    src = Path(__file__).parents[1] / "src" / "napari_sam3"
    files = [src / "cli.py", *(src / "batch").glob("*.py"), src / "core/sam3/engine.py"]
    for f in files:
        for line in f.read_text().splitlines():
            code = line.split("#")[0]
            if "threshold" in code and ("= 0.5" in code or "= 0.3" in code):
                pytest.fail(f"{f.name}: {line.strip()}")


# ------------------------------------------------------------------- 6, 9, 12: validated once
@pytest.mark.parametrize("value", ["100000", "1e-9", "nan", "inf", "-3"])
def test_bad_diameter_is_a_bad_option(tmp_path, value):
    nuclei(tmp_path / "in" / "a.tif", 1)
    res = cli(
        "count", tmp_path / "in", "--method", "classical", "--diameter", value,
        "--out", tmp_path / "o", "--no-progress", timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert f"between {MIN_DIAMETER:g} and {MAX_DIAMETER:g} pixels" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("prompt", ["..", " , ; "])
def test_prompt_without_words_is_a_bad_option(tmp_path, prompt):
    nuclei(tmp_path / "a.tif", 1)
    res = cli("segment", tmp_path / "a.tif", "--prompt", prompt, "--out", tmp_path / "o")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


def test_too_many_concepts_is_a_bad_option(tmp_path):
    from napari_sam3.core.prompts import MAX_CONCEPTS

    nuclei(tmp_path / "a.tif", 1)
    prompt = ", ".join(f"thing{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300))
    res = cli("segment", tmp_path / "a.tif", "--prompt", prompt, "--out", tmp_path / "o")
    assert res.returncode == 2, res.stderr
    assert f"at most {MAX_CONCEPTS}" in res.stderr


def test_python_api_checks_the_same(tmp_path):
    from napari_sam3.batch.process import run_batch
    from napari_sam3.batch.settings import BatchSettings
    from napari_sam3.core.counting.count import count_objects

    img = synthetic_nuclei((64, 64), seed=1)[0]
    for bad in ("18", 1e5, 1e-9, float("nan"), [18]):
        with pytest.raises(Sam3Error, match="diameter"):
            count_objects(img, method="classical", diameter=bad)
    with pytest.raises(Sam3Error, match="between 1 and 1000"):
        BatchSettings(command="count", method="classical", diameter=1e5)
    with pytest.raises(Sam3Error, match="no letters"):
        BatchSettings(prompts=("..",))
    with pytest.raises(Sam3Error, match="threshold"):
        BatchSettings(threshold=float("nan"))
    assert BatchSettings(prompts=("Nucleus; cell", "nucleus")).prompts == ("Nucleus", "cell")
    with pytest.raises(Sam3Error):  # run_batch from Python: refused before any output
        run_batch([str(tmp_path)], BatchSettings(diameter=-1), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_one_concept_parser_everywhere():
    from napari_sam3.batch.settings import parse_prompts
    from napari_sam3.core.counting.sam3_tiled import _concepts
    from napari_sam3.core.prompts import concepts_typed
    from napari_sam3.core.sam3.detector_inputs import exemplar_concepts

    text = ' "Nucleus"; mitotic cell\nnucleus , '
    want = ["Nucleus", "mitotic cell"]
    assert list(parse_prompts(text)) == concepts_typed(text) == _concepts(text) == want
    assert exemplar_concepts(text) == want
    assert exemplar_concepts(" , ") is None and parse_prompts(None) == () and _concepts("") == []


@pytest.mark.slow
def test_engine_refuses_non_text_and_too_many_concepts(engine):
    from napari_sam3.core.prompts import MAX_CONCEPTS

    img = synthetic_nuclei((64, 64), seed=1)[0]
    with pytest.raises(Sam3Error, match="text"):
        engine.segment_text(img, 5)
    with pytest.raises(Sam3Error, match="text"):
        engine.segment_text(img, ["cell", 5])
    many = [f"thing{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300)]
    with pytest.raises(Sam3Error, match=f"at most {MAX_CONCEPTS}"):
        engine.segment_text(img, many)


# ------------------------------------------------------------------- 7: a broken lock is stale
@pytest.mark.slow
@pytest.mark.parametrize("content", ["", '{"pid": "abc", "host": "h"}', '{"pid": null}', "{"])
def test_broken_lock_is_taken_over_with_one_line(tmp_path, content):
    nuclei(tmp_path / "in" / "a.tif", 1)
    out = tmp_path / "o"
    out.mkdir()
    (out / ".sam3.lock").write_text(content)
    res = count(tmp_path / "in", out)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if "lock" in ln][0].count("stale") == 1
    assert not (out / ".sam3.lock").exists()


def test_lock_write_that_fails_leaves_no_lock(tmp_path, monkeypatch):
    import errno

    from napari_sam3.batch import outdir

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outdir.json, "dump", full)
    with pytest.raises(outdir.OutputError, match="disk is full"):
        with outdir.folder_lock(tmp_path):
            pass
    assert not (tmp_path / ".sam3.lock").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# ------------------------------------------------------------------- 8: one name too long
@pytest.mark.slow
def test_one_too_long_file_name_fails_alone(tmp_path):
    d = tmp_path / "in"
    nuclei(d / ("a" * 240 + ".tif"), 1)
    nuclei(d / "b.tif", 2)
    out = tmp_path / "o"
    for _ in range(2):  # and on a rerun
        res = count(d, out)
        assert res.returncode == 1, res.stderr
        assert (
            "over the file system's limit" in res.stderr and "rename the input file" in res.stderr
        )
        assert "--out" not in res.stderr.split("FAILED")[1]  # not blamed on the folder
        assert (out / "b_labels.tif").exists() and "Traceback" not in res.stderr
    assert "1 already complete, 1 failed" in res.stderr


# ------------------------------------------------------------------- 10: a bad nucleus network
def _bad_nets(tmp_path, tiny_checkpoint):
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file")
    giant = tmp_path / "giant.safetensors"
    save_file({}, str(giant), metadata={"widths": "[4096, 8192]"})
    sam3 = next(Path(tiny_checkpoint).glob("*.safetensors"))
    return {"safetensors": garbage, "widths": giant, "another network": sam3}


@pytest.mark.slow
def test_bad_nucleus_net_is_refused_once_before_any_image(tmp_path, tiny_checkpoint):
    d = tmp_path / "in"
    nuclei(d / "a.tif", 1)
    nuclei(d / "b.tif", 2)
    for why, net in _bad_nets(tmp_path, tiny_checkpoint).items():
        res = cli(
            "count", d, "--out", tmp_path / "o", "--no-progress",
            env_extra={"NAPARI_SAM3_NUCLEUS_NET": str(net)},
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0] and "NAPARI_SAM3_NUCLEUS_NET" in lines[0]
        assert len(lines[0]) < 400  # not the missing/unexpected key dump
        assert not (tmp_path / "o").exists()


def test_nucleus_net_metadata_checked_before_building(tmp_path, tiny_checkpoint, monkeypatch):
    from napari_sam3.core.learned import model_file

    nets = _bad_nets(tmp_path, tiny_checkpoint)
    built = []
    monkeypatch.setattr(model_file, "NucleusNet", lambda w: built.append(w))
    with pytest.raises(Sam3Error, match="widths"):
        model_file.load_network(nets["widths"])
    assert built == []  # refused before a network was built


# ------------------------------------------------------------------- friction
@pytest.mark.slow
def test_resume_after_a_hand_edit_names_only_the_changed_file(tmp_path):
    nuclei(tmp_path / "in" / "a.tif", 1)
    out = tmp_path / "o"
    assert count(tmp_path / "in", out, "--format", "tiff,png,coco").returncode == 0
    edited = out / "a_labels.tif"
    edited.write_bytes(edited.read_bytes() + b"\0")
    res = count(tmp_path / "in", out, "--format", "tiff,png,coco")
    assert res.returncode == 1
    failed = [ln for ln in res.stderr.splitlines() if "FAILED" in ln][0]
    assert "a_labels.tif" in failed and "a_objects.csv" not in failed
    assert "a_labels.png" not in failed


@pytest.mark.slow
def test_no_numpy_noise_on_stderr(tmp_path):
    planes = [synthetic_nuclei((96, 96), seed=s, diameter=16)[0] for s in range(2)]
    noise = np.random.default_rng(0).normal(100, 3, (96, 96)).clip(0).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([*planes, noise]), photometric="minisblack")
    res = count(path, tmp_path / "o")  # a given diameter and a plane with nothing in it
    assert res.returncode == 0, res.stderr
    assert "Warning:" not in res.stderr and "RuntimeWarning" not in res.stderr
    assert "stands out from the camera noise" in res.stderr  # our own warning still shows
