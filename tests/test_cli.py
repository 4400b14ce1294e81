"""The napari-sam3 CLI end to end on the tiny random checkpoint (real model code, no mocks)."""

import json
import os
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam3.cli import main
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io import load_coco, read_labels_tiff, read_table_csv
from napari_sam3.io.tables import OBJECT_COLUMNS

COLUMNS = list(OBJECT_COLUMNS)


@pytest.fixture
def images(tmp_path):
    """A folder with a calibrated 2-D TIFF, a 3-plane stack, an RGB PNG and two bad files."""
    d = tmp_path / "in"
    d.mkdir()
    img, _ = synthetic_nuclei((96, 112), seed=1)
    tifffile.imwrite(
        d / "a.tif", img, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"}
    )
    st = np.stack([synthetic_nuclei((64, 64), seed=s)[0] for s in range(3)])
    tifffile.imwrite(d / "stack.tif", st, metadata={"axes": "ZYX"})
    iio.imwrite(d / "rgb.png", np.repeat((img[:64, :64] >> 4).astype(np.uint8)[..., None], 3, -1))
    (d / "empty.tif").write_bytes(b"")
    (d / "junk.png").write_bytes(b"this is not an image" * 5)
    return d


def seg(inputs, out, ckpt, *extra):
    args = [
        "segment",
        *map(str, inputs),
        "--prompt",
        "nucleus, cell",
        "--model",
        str(ckpt),
        "--device",
        "cpu",
        "--threshold",
        "0.2",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    return main(args)


GOOD = ["a", "rgb", "stack_z000", "stack_z001", "stack_z002"]


def snapshot(out):
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and p.name not in ("manifest.json", "counts.csv", "coco.json")
        and ".done" not in p.parts
    }


def test_segment_folder_bad_files_skipped_exit_1(images, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    assert seg([images], out, tiny_checkpoint, "--format", "tiff,png,coco,pairs") == 1
    err = capsys.readouterr().err
    assert "empty.tif" in err and "0 bytes" in err and "junk.png" in err
    assert "Traceback" not in err
    for stem in GOOD:
        labels = read_labels_tiff(out / f"{stem}_labels.tif")
        table = read_table_csv(out / f"{stem}_objects.csv")
        assert list(table.columns[: len(COLUMNS)]) == COLUMNS
        assert set(table["prompt"]) <= {"nucleus", "cell"}
        assert (table["score"] >= 0.2).all()
        # the table describes the label image: every visible object id is in it
        ids = set(np.unique(labels.data)) - {0}
        assert ids <= set(table["label"])
        assert (out / "pairs" / "images" / f"{stem}.tif").exists()
        assert json.loads((out / ".done" / f"{stem}.json").read_text())["status"] == "done"
    assert read_labels_tiff(out / "a_labels.tif").scale == pytest.approx((0.5, 0.5))
    man = json.loads((out / "manifest.json").read_text())
    assert man["summary"] == {"planes": 7, "done": 5, "skipped": 0, "failed": 2}
    assert man["settings"]["prompts"] == ["nucleus", "cell"]
    assert "torch" in man["versions"]
    failed = {i["stem"]: i["error"] for i in man["images"] if i["status"] == "failed"}
    assert set(failed) == {"empty", "junk"}
    # COCO for the run: loads with pycocotools, one category per concept, one annotation per object
    coco = load_coco(out / "coco.json")
    n_rows = sum(len(read_table_csv(out / f"{s}_objects.csv")) for s in GOOD)
    assert len(coco.getAnnIds()) <= n_rows and len(coco.getImgIds()) == 5
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} <= {"nucleus", "cell"}
    assert all(a["score"] is not None for a in coco.loadAnns(coco.getAnnIds()))
    counts = pd.read_csv(out / "counts.csv")
    assert list(counts["status"]).count("done") == 5
    pairs = json.loads((out / "pairs" / "manifest.json").read_text())["pairs"]
    assert sorted(p["stem"] for p in pairs) == sorted(GOOD)
    assert pairs[0]["model"] == str(tiny_checkpoint) and pairs[0]["threshold"] == 0.2

    # rerun: everything complete is skipped (files untouched), the bad files are reported again
    before = snapshot(out)
    assert seg([images], out, tiny_checkpoint, "--format", "tiff,png,coco,pairs") == 1
    assert "0 done, 5 already complete" in capsys.readouterr().err
    assert snapshot(out) == before
    # only good inputs: exit 0
    good = [images / "a.tif", images / "stack.tif", images / "rgb.png"]
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,png,coco,pairs") == 0


@pytest.mark.slow
def test_resume_redoes_partial_and_never_duplicates(images, tmp_path, tiny_checkpoint, capsys):
    good = [images / "a.tif", images / "stack.tif", images / "rgb.png"]
    out = tmp_path / "out"
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,coco") == 0
    ref = snapshot(out)
    ref_coco = json.loads((out / "coco.json").read_text())
    # crash damage: a deleted output, started-only records (a run killed between writing outputs
    # and its record, with and without the outputs) and a stale temporary file
    (out / "stack_z001_objects.csv").unlink()
    rec = json.loads((out / ".done" / "rgb.json").read_text())
    (out / ".done" / "rgb.json").write_text(json.dumps({**rec, "status": "started"}))
    rec = json.loads((out / ".done" / "a.json").read_text())
    (out / ".done" / "a.json").write_text(json.dumps({**rec, "status": "started", "outputs": {}}))
    (out / "a_labels.tif").unlink()
    (out / ".sam3tmp-a_labels-xyz.tif").write_bytes(b"half")
    capsys.readouterr()
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,coco") == 0
    assert "3 done, 2 already complete" in capsys.readouterr().err
    assert snapshot(out) == ref  # same bytes as the uninterrupted run
    coco = json.loads((out / "coco.json").read_text())
    assert coco["annotations"] == ref_coco["annotations"] and coco["images"] == ref_coco["images"]
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids))
    assert not list(out.glob(".sam3tmp-*"))
    # an input changed since its outputs were written: that image is redone
    rgb = iio.imread(images / "rgb.png")
    rgb[:8] = 255
    iio.imwrite(images / "rgb.png", rgb)
    capsys.readouterr()
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,coco") == 0
    assert "1 done, 4 already complete" in capsys.readouterr().err
    # a hand-edited labels file and files whose record is gone are not ours to replace
    edited = out / "stack_z001_labels.tif"
    edited.write_bytes(edited.read_bytes() + b"\0")
    (out / ".done" / "rgb.json").unlink()
    mine = snapshot(out)
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,coco") == 1
    err = capsys.readouterr().err
    assert "changed after the run that wrote them" in err and "stack_z001_labels.tif" in err
    assert "did not write: rgb_labels.tif" in err
    assert {k: v for k, v in snapshot(out).items() if "labels" in k or "objects" in k} == {
        k: v for k, v in mine.items() if "labels" in k or "objects" in k
    }
    assert seg(good, out, tiny_checkpoint, "--format", "tiff,coco", "--overwrite") == 0


@pytest.mark.slow
def test_resume_after_killed_process(tmp_path):
    """Kill a real CLI process half-way; the rerun completes every image exactly once.

    Uses the classical counter (same batch, record and export code; no model start-up), so the two
    processes cost seconds.
    """
    many = tmp_path / "many"
    many.mkdir()
    for i in range(8):
        tifffile.imwrite(many / f"img{i}.tif", synthetic_nuclei((384, 384), seed=i)[0])
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "napari_sam3.cli",
        "count",
        str(many),
        "--method",
        "classical",
        "--diameter",
        "18",
        "--out",
        str(out),
        "--no-progress",
        "--format",
        "tiff,coco",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / ".done").glob("*.json"))) >= 3:
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    killed_early = not (out / "manifest.json").exists()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert killed_early  # the test really interrupted a run
    man = json.loads((out / "manifest.json").read_text())
    assert man["summary"]["failed"] == 0 and man["summary"]["planes"] == 8
    assert 1 <= man["summary"]["skipped"] < 8  # work done before the kill was kept
    coco = json.loads((out / "coco.json").read_text())
    assert [i["stem"] for i in coco["images"]] == [f"img{i}" for i in range(8)]
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))
    for i in range(8):
        table = read_table_csv(out / f"img{i}_objects.csv")
        n_coco = sum(1 for a in coco["annotations"] if a["image_id"] == i + 1)
        assert n_coco == len(table) > 0  # one annotation per row: no duplicates, none lost
        labels = read_labels_tiff(out / f"img{i}_labels.tif").data
        assert list(table["label"]) == sorted(set(np.unique(labels)) - {0})


def test_overwrite_rules(images, tmp_path, tiny_checkpoint, capsys):
    a = images / "a.tif"
    out = tmp_path / "out"
    assert seg([a], out, tiny_checkpoint) == 0
    # other settings into the same folder: refused per image, exit 1, nothing changed
    before = snapshot(out)
    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                str(a),
                "--prompt",
                "cell",
                "--model",
                str(tiny_checkpoint),
                "--threshold",
                "0.2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "different settings" in err and "--overwrite" in err
    assert snapshot(out) == before
    assert (
        main(
            [
                "segment",
                str(a),
                "--prompt",
                "cell",
                "--model",
                str(tiny_checkpoint),
                "--threshold",
                "0.2",
                "--out",
                str(out),
                "--no-progress",
                "--overwrite",
            ]
        )
        == 0
    )
    assert set(read_table_csv(out / "a_objects.csv")["prompt"]) == {"cell"}
    # files we did not write (fresh folder): refused without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a_objects.csv").write_text("precious")
    assert seg([a], mine, tiny_checkpoint) == 1
    assert "did not write" in capsys.readouterr().err
    assert (mine / "a_objects.csv").read_text() == "precious"
    assert seg([a], mine, tiny_checkpoint, "--overwrite") == 0
    assert (mine / "a_objects.csv").read_text() != "precious"


def test_usage_and_model_errors_exit_2_without_traceback(images, tmp_path, capsys):
    a = str(images / "a.tif")
    out = str(tmp_path / "o")
    assert main(["segment", a, "--out", out]) == 2  # no concepts
    assert "--concepts" in capsys.readouterr().err
    assert main(["segment", a, "--prompt", "x", "--exemplar", "1,2,3", "--out", out]) == 2
    assert main(["segment", a, "--prompt", "x", "--threshold", "3", "--out", out]) == 2
    assert main(["segment", a, "--prompt", "x", "--format", "gif", "--out", out]) == 2
    assert main(["segment", a, "--prompt", "x", "--tile", "big", "--out", out]) == 2
    assert main(["segment", a]) == 2  # argparse: --out missing
    capsys.readouterr()
    missing = str(tmp_path / "no-such-model")
    assert (
        main(["segment", a, "--prompt", "x", "--model", missing, "--out", out, "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert (
        main(
            [
                "segment",
                a,
                "--prompt",
                "x",
                "--model",
                missing,
                "--out",
                out,
                "--no-progress",
                "--debug",
            ]
        )
        == 2
    )
    assert main(["--version"]) == 0


@pytest.mark.slow
def test_count_classical_and_exemplars(images, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "cnt"
    assert (
        main(
            [
                "count",
                str(images / "a.tif"),
                str(images / "stack.tif"),
                "--method",
                "classical",
                "--diameter",
                "18",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    table = read_table_csv(out / "a_objects.csv")
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table["score"].isna().all() and len(table) > 3
    assert (table["prompt"] == "classical").all()
    counts = pd.read_csv(out / "counts.csv")
    assert counts.set_index("stem").loc["a", "count"] == len(table)
    labels = read_labels_tiff(out / "a_labels.tif").data
    assert len(np.unique(labels)) - 1 == len(table)
    # SAM3 counting: scores filled in
    s3 = tmp_path / "s3"
    assert (
        main(
            [
                "count",
                str(images / "a.tif"),
                "--method",
                "sam3",
                "--prompt",
                "nucleus",
                "--model",
                str(tiny_checkpoint),
                "--threshold",
                "0.2",
                "--out",
                str(s3),
                "--no-progress",
            ]
        )
        == 0
    )
    t3 = read_table_csv(s3 / "a_objects.csv")
    assert len(t3) and (t3["score"] >= 0.2).all() and set(t3["prompt"]) == {"nucleus"}
    # exemplar boxes (no text): prompt "exemplar"
    ex = tmp_path / "ex"
    assert (
        main(
            [
                "segment",
                str(images / "a.tif"),
                "--exemplar",
                "10,10,40,40",
                "--model",
                str(tiny_checkpoint),
                "--threshold",
                "0.0",
                "--out",
                str(ex),
                "--no-progress",
            ]
        )
        == 0
    )
    assert set(read_table_csv(ex / "a_objects.csv")["prompt"]) <= {"exemplar"}


def test_cli_imports_no_qt_or_napari():
    code = (
        "import sys, napari_sam3.cli, napari_sam3.io, napari_sam3.batch, napari_sam3._writer; "
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('napari','qtpy','PyQt5','PyQt6','PySide2','PySide6','vispy')]; print(bad)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "napari_sam3.cli", "gui", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and "--sample" in res.stdout


def test_negative_exemplars(images, tmp_path, tiny_checkpoint, capsys):
    a = images / "a.tif"
    out = tmp_path / "neg"

    def run(*extra):
        return main(
            [
                "segment",
                str(a),
                "--model",
                str(tiny_checkpoint),
                "--threshold",
                "0.0",
                "--out",
                str(out),
                "--no-progress",
                *extra,
            ]
        )

    assert run("--exemplar", "10,10,40,40", "--negative-exemplar", "50,50,80,90") == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["settings"]["exemplars"] == [[10, 10, 40, 40], [50, 50, 80, 90]]
    assert man["settings"]["exemplar_labels"] == [1, 0]
    prov = json.loads((out / ".done" / "a.json").read_text())["provenance"]
    assert prov["exemplars"] == [[10, 10, 40, 40], [50, 50, 80, 90]]
    assert prov["exemplar_labels"] == [1, 0]
    # a changed set of negatives is another run: not skipped as complete
    capsys.readouterr()
    assert run("--exemplar", "10,10,40,40", "--negative-exemplar", "50,50,80,91") == 1
    assert "different settings" in capsys.readouterr().err
    # positives only: same fields and fingerprint as before negatives existed
    from napari_sam3.batch.settings import BatchSettings

    pos = BatchSettings(exemplars=((10.0, 10.0, 40.0, 40.0),))
    assert "exemplar_labels" not in pos.result_fields()
    assert "negative_exemplars" not in pos.result_fields()
    neg = BatchSettings(exemplars=pos.exemplars, negative_exemplars=((1.0, 1.0, 5.0, 5.0),))
    assert neg.fingerprint() != pos.fingerprint()
    # negatives alone: usage error naming the fix; malformed boxes: usage error
    capsys.readouterr()
    assert run("--negative-exemplar", "50,50,80,90") == 2
    err = capsys.readouterr().err
    assert "--negative-exemplar" in err and "--exemplar" in err and "--concepts" in err
    assert "Traceback" not in err
    for bad in ("1,2,3", "a,b,c,d", "40,10,10,40", "10,40,40,40"):
        assert run("--prompt", "cell", "--negative-exemplar", bad) == 2
        assert "--negative-exemplar" in capsys.readouterr().err
    counted = tmp_path / "cnt"
    argv = ["count", str(a), "--method", "sam3", "--out", str(counted), "--no-progress"]
    assert main([*argv, "--negative-exemplar", "50,50,80,90"]) == 2
    ex = ["--exemplar", "10,10,40,40", "--negative-exemplar", "50,50,80,90"]
    opts = ["--model", str(tiny_checkpoint), "--threshold", "0.0", "--diameter", "18"]
    assert main([*argv, *ex, *opts]) == 0
    settings = json.loads((counted / "manifest.json").read_text())["settings"]
    assert settings["exemplar_labels"] == [1, 0]


def test_exemplar_from_reference_image(images, tmp_path, tiny_checkpoint, engine, capsys):
    """--exemplar-from: boxes encoded on the reference image, every input conditioned on them;
    the labels equal the engine's own `segment_with`, and the run records which reference it used."""
    from napari_sam3.core.results.refine import filter_candidates

    ref = images / "a.tif"
    target = tmp_path / "target.tif"
    tifffile.imwrite(target, synthetic_nuclei((80, 88), seed=7)[0])
    out = tmp_path / "out_from"
    args = ["segment", str(target), "--exemplar-from", f"{ref}:20,20,44,44;50,30,70,52"]
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--threshold", "0.05"]
    assert main([*args, *common, "--out", str(out), "--no-progress"]) == 0

    prompt = engine.exemplar_prompt(
        tifffile.imread(ref), [[20, 20, 44, 44], [50, 30, 70, 52]], text=None
    )
    cands = engine.segment_with(tifffile.imread(target), prompt, min_score=0.05)
    expected = filter_candidates(cands, 0.05).to_label_image()
    got = read_labels_tiff(out / "target_labels.tif").data
    assert expected.max() > 0, "the tiny model found nothing: the comparison would be empty"
    assert got.shape == expected.shape and np.array_equal(got > 0, expected > 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["exemplar_from"]  # the reference's fingerprint is the run's
    # the reference changes -> not the same run: a rerun is refused until --overwrite
    tifffile.imwrite(ref, synthetic_nuclei((96, 112), seed=9)[0])
    capsys.readouterr()
    assert main([*args, *common, "--out", str(out), "--no-progress"]) != 0
    assert main([*args, "--exemplar", "1,1,9,9", *common, "--out", str(out)]) == 2
    assert "cannot be mixed" in capsys.readouterr().err
