"""Batch runs never lose, mix up or overwrite data: names, user files, merges, lock, OS failures.

Uses ``count`` (classical: the same run loop, records and export as segment/track, no model).
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam3.batch.outdir import LOCK_NAME, folder_lock
from napari_sam3.cli import main
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.synthetic import synthetic_nuclei


def count(inputs, out, *extra):
    return main(["count", *map(str, inputs), "--out", str(out), "--no-progress", *extra])


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        tifffile.imwrite(d / f"img{i}.tif", synthetic_nuclei((80, 80), seed=i)[0])
    return d


def test_plane_names_must_be_unique_across_the_run(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.stack([synthetic_nuclei((64, 64), seed=s)[0] for s in (1, 2)]))
    tifffile.imwrite(d / "a_z000.tif", synthetic_nuclei((64, 64), seed=3)[0])
    out = tmp_path / "out"
    assert count([d], out) == 2
    err = capsys.readouterr().err
    assert "output names would collide: 'a_z000' from a.tif and a_z000.tif" in err
    assert "Traceback" not in err
    assert not list(out.glob("*_labels.tif")) and not (out / ".done").exists()  # before any work


def test_a_users_counts_csv_in_a_fresh_out_is_not_clobbered(folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "counts.csv").write_text("my,own\n1,2\n")
    assert count([folder], out) == 2
    assert "counts.csv" in capsys.readouterr().err
    assert (out / "counts.csv").read_text() == "my,own\n1,2\n"
    assert not list(out.glob("*_labels.tif"))
    assert count([folder], out, "--overwrite") == 0  # the user's explicit action


def test_subset_rerun_keeps_the_other_images_rows(folder, tmp_path):
    out = tmp_path / "out"
    assert count([folder], out, "--format", "coco") == 0
    full = pd.read_csv(out / "counts.csv")
    coco = json.loads((out / "coco.json").read_text())
    assert len(full) == 3
    (out / ".done" / "img1.json").unlink()  # so that img1 is really redone...
    for p in out.glob("img1_*"):
        p.unlink()
    (out / ".parts" / "img1.coco.json").unlink()
    assert count([folder / "img1.tif"], out, "--format", "coco") == 0  # ...alone
    again = pd.read_csv(out / "counts.csv")
    assert sorted(again["stem"]) == ["img0", "img1", "img2"] and again["stem"].is_unique
    pd.testing.assert_frame_equal(
        full.sort_values("stem").reset_index(drop=True)[["stem", "count", "status"]],
        again.sort_values("stem").reset_index(drop=True)[["stem", "count", "status"]],
    )
    merged = json.loads((out / "coco.json").read_text())
    assert len(merged["images"]) == 3 and len(merged["annotations"]) == len(coco["annotations"])
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(e["stem"] for e in man["images"]) == ["img0", "img1", "img2"]
    # a hand edit of a run table is noticed: the next run refuses to replace it
    (out / "counts.csv").write_text((out / "counts.csv").read_text() + "# my note\n")
    assert count([folder / "img1.tif"], out, "--format", "coco") == 2
    assert (out / "counts.csv").read_text().endswith("# my note\n")


def test_a_busy_folder_is_refused_and_a_dead_runs_lock_taken_over(folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "test"):
        live_tmp = out / ".sam3tmp-img0_labels-live.tif"
        live_tmp.write_bytes(b"a live run's temporary")
        assert count([folder], out) == 2
        err = capsys.readouterr().err
        assert "another napari-sam3 run" in err and f"pid {os.getpid()}" in err
        assert live_tmp.exists()  # never removed while its run lives
    assert not (out / LOCK_NAME).exists()
    # a lock left by a process that is gone (same host): stale, taken over, its temporaries removed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    assert count([folder], out) == 0
    assert not live_tmp.exists() and not (out / LOCK_NAME).exists()


def test_second_concurrent_process_refuses(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "first"):
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cmd = [
            sys.executable,
            "-m",
            "napari_sam3.cli",
            "count",
            str(folder),
            "--out",
            str(out),
            "--no-progress",
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "is writing into" in res.stderr
    assert "Traceback" not in res.stderr


def test_out_under_a_file_is_one_line_exit_2(folder, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert count([folder], afile / "sub") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0] and str(afile) in err[0]


@contextlib.contextmanager
def tmpfs(path, size, readonly=False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_out_is_one_line_exit_2(folder, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        assert count([folder], ro / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only" in err[0] and "choose another --out" in err[0]


def test_disk_full_mid_run_stops_with_a_summary_and_keeps_what_finished(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(12):  # ~3 files (a 4 KiB page each) per plane: a few fill the small disk
        tifffile.imwrite(d / f"n{i:02d}.tif", synthetic_nuclei((96, 96), seed=i)[0])
    with tmpfs(tmp_path / "small", "64k") as small:
        out = small / "out"
        code = count([d], out)
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert "No space left on device" in last and "free space" in last
        done = [json.loads(p.read_text()) for p in (out / ".done").glob("*.json")]
        finished = [r["stem"] for r in done if r["status"] == "done"]
        assert f"{len(finished)} done" in err  # summarised
        for stem in finished:  # what finished is complete and recorded
            assert (out / f"{stem}_labels.tif").stat().st_size > 0
        assert len([r for r in done if r["status"] != "done"]) <= 1  # the plane being written
        assert not list(out.glob(".sam3tmp-*"))
        # space freed: the same command finishes the rest, redoing nothing that finished
        subprocess.run(["mount", "-o", "remount,size=4m", str(small)], check=True)
        assert count([d], out) == 0
        assert f"{12 - len(finished)} done, {len(finished)} already complete" in (
            capsys.readouterr().err
        )
        assert len(pd.read_csv(out / "counts.csv")) == 12


def test_a_failed_plane_does_not_block_a_rerun_with_other_settings(tmp_path, capsys):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.full((64, 64), np.nan, np.float32))  # fails while being produced
    out = tmp_path / "out"
    assert count([img], out) == 1
    assert "no finite values" in capsys.readouterr().err
    assert not list((out / ".done").glob("*.json"))  # no claim left behind
    assert count([img], out, "--diameter", "9") == 1  # other settings: the same reason, no refusal
    err = capsys.readouterr().err
    assert "no finite values" in err and "outputs exist" not in err
    # a started record (a run killed mid-plane) from other settings is ours and incomplete: redone
    tifffile.imwrite(img, synthetic_nuclei((64, 64), seed=1)[0])
    (out / ".done" / "x.json").write_text(json.dumps({"status": "started", "fingerprint": "old"}))
    assert count([img], out) == 0
    assert json.loads((out / ".done" / "x.json").read_text())["status"] == "done"


def test_folder_lock_refuses_a_live_lock_from_another_host(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(Sam3Error, match="on elsewhere"), folder_lock(tmp_path):
        pass


@pytest.mark.slow
def test_wait_waits_for_the_run_holding_the_folder(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from napari_sam3.batch.outdir import folder_lock\n"
            "with folder_lock(Path(sys.argv[1]), 'holder'):\n"
            "    print('held', flush=True); time.sleep(3)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    assert count([folder], out, "--wait") == 0  # waited, then ran
    assert holder.wait(timeout=30) == 0
    assert len(pd.read_csv(out / "counts.csv")) == 3
