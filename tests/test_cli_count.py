"""``napari-sam3 count`` (the default nucleus network and --method classical) on stacks: one
diameter per file, --polarity."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_sam3.cli import main
from napari_sam3.core.synthetic import synthetic_nuclei


def _count(inputs, out, *extra, method="classical"):
    chosen = [] if method is None else ["--method", method]  # None: the default (learned)
    argv = ["count", *map(str, inputs), *chosen, "--out", str(out)]
    return main([*argv, "--no-progress", *extra])


def _entries(out):
    return json.loads((out / "manifest.json").read_text())["images"]


@pytest.mark.parametrize("method", [None, "classical"])
def test_stack_counts_every_plane_at_one_file_diameter(tmp_path, method):
    # three nucleus planes and one camera-noise plane: the noise plane must not invent a scale
    planes = [synthetic_nuclei((128, 128), seed=s, diameter=16)[0] for s in range(3)]
    noise = np.random.default_rng(0).normal(100, 3, (128, 128)).clip(0).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path, np.stack([*planes, noise]), photometric="minisblack", metadata={"axes": "ZYX"}
    )
    out = tmp_path / "out"
    assert _count([path], out, method=method) == 0
    entries = _entries(out)
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["method"] == (method or "learned")
    assert len(entries) == 4
    diameters = {e["diameter"] for e in entries}
    assert len(diameters) == 1 and 10 < diameters.pop() < 24  # true diameter 16 px
    assert {e["diameter_source"] for e in entries} == {"file"}
    counts = pd.read_csv(out / "counts.csv").set_index("stem")["count"]
    assert counts["stack_z003"] <= 3 and min(counts[f"stack_z00{i}"] for i in range(3)) > 10
    # a given diameter is used as given
    given = tmp_path / "given"
    assert _count([path], given, "--diameter", "20", method=method) == 0
    assert {(e["diameter"], e["diameter_source"]) for e in _entries(given)} == {(20.0, "given")}


def test_polarity_forces_a_count_the_fluorescence_check_refused(tmp_path, capsys):
    img, _ = synthetic_nuclei((128, 128), seed=2)
    texture = ndi.gaussian_filter(np.random.default_rng(0).normal(size=img.shape), 3)
    textured = (img + 200 * texture / texture.std() + 5000).astype(np.uint16)  # no flat floor
    path = tmp_path / "textured.tif"
    tifffile.imwrite(path, textured)
    auto = tmp_path / "auto"
    assert _count([path], auto) == 0
    (entry,) = _entries(auto)
    assert pd.read_csv(auto / "counts.csv")["count"].sum() == 0
    assert any("--polarity bright" in w for w in entry["warnings"])
    err = capsys.readouterr().err  # the user reads why nothing was counted, not only the manifest
    assert "WARNING" in err and "textured.tif" in err and "--polarity bright" in err
    forced = tmp_path / "forced"
    assert _count([path], forced, "--polarity", "bright") == 0
    assert pd.read_csv(forced / "counts.csv")["count"].sum() > 10
    assert _entries(forced)[0]["polarity"] == "bright"
    # counted as asked, but the result still says the plane did not look like fluorescence
    assert any("only because the polarity was set" in w for w in _entries(forced)[0]["warnings"])
    err = capsys.readouterr().err
    assert "WARNING" in err and "only because the polarity was set" in err
