"""A Dask run (LocalCluster, 2 worker processes, tiny checkpoint) equals the single-process run."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam3.cli import main
from napari_sam3.core.synthetic import synthetic_nuclei

pytest.importorskip("distributed")


def _outputs(out):
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and ".done" not in p.parts and p.name not in ("manifest.json", "coco.json"):
            files[rel] = p.read_bytes()
    return files


@pytest.mark.slow
def test_dask_local_cluster_equals_single_process(tmp_path, tiny_checkpoint, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        tifffile.imwrite(d / f"img{i}.tif", synthetic_nuclei((80, 96), seed=i)[0])
    tifffile.imwrite(
        d / "stack.tif",
        np.stack([synthetic_nuclei((64, 64), seed=9 + s)[0] for s in range(2)]),
        metadata={"axes": "ZYX"},
    )
    (d / "broken.tif").write_bytes(b"II*\x00garbage")
    common = [
        "segment",
        str(d),
        "--prompt",
        "nucleus, cell",
        "--model",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--threshold",
        "0.2",
        "--format",
        "tiff,coco",
        "--no-progress",
    ]
    single, multi = tmp_path / "single", tmp_path / "dask"
    assert main([*common, "--out", str(single)]) == 1  # broken.tif fails, the rest is done
    assert main([*common, "--out", str(multi), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("broken.tif") >= 2 and "Traceback" not in err
    a, b = _outputs(single), _outputs(multi)
    assert sorted(a) == sorted(b) and len(a) >= 5 * 2
    assert a == b  # byte-identical labels, tables and COCO parts
    ca, cb = (json.loads((o / "coco.json").read_text()) for o in (single, multi))
    assert ca["annotations"] == cb["annotations"] and ca["images"] == cb["images"]
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in (single, multi))
    assert ma["summary"] == mb["summary"] == {"planes": 6, "done": 5, "skipped": 0, "failed": 1}
    # the workers wrote valid completion records: a rerun skips everything they did
    assert main([*common, "--out", str(multi)]) == 1
    assert "0 done, 5 already complete" in capsys.readouterr().err
