"""``napari-sam3 adapt`` then ``segment --adapter``, through the real entry point in subprocesses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam3.batch.settings import BatchSettings
from napari_sam3.core.results.measure import match_labels
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io import read_labels_tiff
from napari_sam3.io.adapter_file import write_adapter


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("napari-sam3")
    found = str(script) if script.exists() else shutil.which("napari-sam3")
    return [found] if found else [sys.executable, "-m", "napari_sam3.cli"]


def _run(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*_cli(), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def labelled(tmp_path):
    """8 images of one large synthetic nucleus each, their labels as segment writes them."""
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    for i in range(8):
        img, lab = synthetic_nuclei((224, 224), n=1, seed=i, diameter=80.0, touching=0)
        tifffile.imwrite(images / f"img{i}.tif", img)
        tifffile.imwrite(labels / f"img{i}_labels.tif", lab.astype(np.uint16))
    return images, labels


@pytest.mark.slow
def test_adapt_then_segment_with_adapter(labelled, tmp_path, tiny_checkpoint):
    images, labels = labelled
    adapter = tmp_path / "nucleus.sam3-adapter.safetensors"
    common = ["--model", tiny_checkpoint, "--device", "cpu"]
    res = _run("adapt", images, "--labels", labels, "--prompt", "nucleus", "--out", adapter,
               "--steps", "200", *common)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "F1 0.000 ->" in res.stderr and "adapter written" in res.stderr
    assert adapter.is_file()
    # the same command again refuses to replace the file
    again = _run("adapt", images, "--labels", labels, "--prompt", "nucleus", "--out", adapter,
                 "--steps", "1", *common)  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr

    plain, adapted = tmp_path / "plain", tmp_path / "adapted"
    for out, extra in ((plain, []), (adapted, ["--adapter", adapter])):
        res = _run("segment", images, "--prompt", "nucleus", "--out", out, "--no-progress",
                   *common, *extra)  # fmt: skip
        assert res.returncode == 0, res.stderr
    truth = {p.name.replace("_labels", ""): tifffile.imread(p) for p in labels.glob("*.tif")}

    def f1(out):
        tp = fp = fn = 0
        for name, lab in truth.items():
            m = match_labels(lab, read_labels_tiff(out / name.replace(".tif", "_labels.tif")).data)
            tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        return 2 * tp / (2 * tp + fp + fn)

    # the random base model's masks miss the nuclei; the adapter's find them (6 of the 8 images
    # were trained on, 2 held out)
    assert f1(plain) < 0.3 < 0.75 <= f1(adapted)

    bad = _run("segment", images, "--prompt", "nucleus", "--out", tmp_path / "x",
               "--adapter", labels / "img0_labels.tif", "--no-progress", *common)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") <= 3, bad.stderr
    assert "not a safetensors file" in bad.stderr or "not a napari-sam3 adapter" in bad.stderr


def test_adapt_needs_labels_for_every_image(labelled, tmp_path, tiny_checkpoint):
    images, labels = labelled
    (labels / "img3_labels.tif").unlink()
    res = _run("adapt", images, "--labels", labels, "--prompt", "nucleus", "--out",
               tmp_path / "a.safetensors", "--model", tiny_checkpoint)  # fmt: skip
    assert res.returncode == 2 and "img3_labels.tif is missing" in res.stderr


def test_adapter_enters_the_fingerprint(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    base = BatchSettings(prompts=("nucleus",))
    with_a = BatchSettings(prompts=("nucleus",), adapter=str(a))
    with_b = BatchSettings(prompts=("nucleus",), adapter=str(b))
    assert len({base.fingerprint(), with_a.fingerprint(), with_b.fingerprint()}) == 3
    assert "adapter" not in base.result_fields()  # runs without one keep their fingerprint


@pytest.mark.slow
def test_track_with_adapter(tmp_path):
    """track --adapter runs the video detector with the adapter (in its fingerprint too)."""
    import torch

    from napari_sam3.batch.track_settings import TrackSettings
    from napari_sam3.cli import main
    from napari_sam3.core.sam3.adapter import Sam3Adapter
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.testing import tiny_checkpoint_dir

    ckpt = tiny_checkpoint_dir(video=True)
    engine = Sam3Engine.load(str(ckpt), device="cpu")
    adapter = Sam3Adapter.new(engine.model.detector_model, rank=2)
    with torch.no_grad():
        for _, b in adapter.weights.values():
            b.normal_(0, 0.5)
    file = write_adapter(adapter, tmp_path / "v.sam3-adapter.safetensors")
    movie = np.stack([synthetic_nuclei((64, 64), seed=s)[0] for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", movie, metadata={"axes": "TYX"})
    runs = {}
    try:
        for name, extra in (("plain", []), ("adapted", ["--adapter", str(file)])):
            out = tmp_path / name
            argv = ["track", str(tmp_path / "movie.tif"), "--prompt", "cell", "--model", str(ckpt),
                    "--device", "cpu", "--threshold", "0.0", "--out", str(out), "--no-progress"]  # fmt: skip
            assert main([*argv, *extra]) == 0
            runs[name] = [tifffile.imread(p) for p in sorted(out.glob("*_tracks.tif"))]
    finally:
        engine.set_adapter(None)
    assert runs["plain"] and len(runs["plain"]) == len(runs["adapted"])
    assert any(
        not np.array_equal(a, b) for a, b in zip(runs["plain"], runs["adapted"], strict=True)
    )
    plain = TrackSettings(prompts=("cell",))
    assert plain.fingerprint() != TrackSettings(prompts=("cell",), adapter=str(file)).fingerprint()
    assert "adapter" not in plain.result_fields()


def test_adapter_that_is_not_better_is_not_written(labelled, tmp_path, tiny_checkpoint, capsys):
    """One step cannot beat the base on the held-out images: exit 1, no file, the numbers said."""
    from napari_sam3.cli import main

    images, labels = labelled
    out = tmp_path / "worse.sam3-adapter.safetensors"
    argv = ["adapt", str(images), "--labels", str(labels), "--prompt", "nucleus", "--out", str(out),
            "--steps", "1", "--model", str(tiny_checkpoint), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "not better" in err and "held-out F1 0.000 -> 0.000" in err and "no adapter" in err
    assert not out.exists()
    assert main([*argv, "--keep-worse"]) == 0 and out.is_file()
