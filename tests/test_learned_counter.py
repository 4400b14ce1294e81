"""The shipped nucleus network ("learned" counting): its file, its accuracy on synthetic nuclei it
never saw (training used other seeds), the screening it shares with the classical counter, tiles,
stacks, options, and the training script end to end (a few steps on synthetic planes)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_sam3.core.counting.count import count_objects, count_stack
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.learned import predict as predict_mod
from napari_sam3.core.learned.model_file import SHIPPED, load_network
from napari_sam3.core.learned.training import SCALES
from napari_sam3.core.results.measure import match_labels
from napari_sam3.core.synthetic import synthetic_nuclei

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nuclei():
    return synthetic_nuclei((320, 320), seed=7, diameter=18, coverage=0.45, touching=0.8)


@pytest.fixture(scope="module")
def counted(nuclei):
    return count_objects(nuclei[0], "learned")


def test_shipped_weights_are_small_safetensors_with_their_provenance():
    assert SHIPPED.suffix == ".safetensors" and SHIPPED.stat().st_size < 20 * 2**20
    net, meta = load_network()
    assert not net.training
    trained_on = json.loads(meta["trained_on"])
    sources = {t.split(":", 1)[0] for t in trained_on}
    # every labelled source of training/DATA.md, and the synthetic planes
    assert {"mnf_rpe1", "mnf_u2os", "mnf_misc", "hela", "scratch", "cho3dt", "synthetic"} <= sources
    licences = json.loads(meta["licences"])
    assert licences["mnf_rpe1"].startswith("MIT") and licences["hela"].startswith("BSD-3-Clause")
    assert meta["augment"] == "wide"  # the recipe that the leave-one-source-out table measures


def test_learned_is_the_default_and_counts_touching_nuclei(nuclei, counted):
    img, truth = nuclei
    assert counted.method == "learned" and count_objects(img).method == "learned"
    m = match_labels(truth, counted.labels)
    n_true = len(np.unique(truth)) - 1
    assert abs(counted.count - n_true) <= 0.1 * n_true, (counted.count, n_true)
    assert m["f1"] >= 0.85 and m["mean_iou"] >= 0.75, m
    assert counted.counts == {"learned": counted.count}
    assert set(counted.table["prompt"]) == {"learned"}
    assert 14 <= counted.diameter <= 23


def test_noise_empty_and_phase_contrast_give_nothing_and_say_why():
    rng = np.random.default_rng(0)
    cam = (rng.poisson(np.full((256, 256), 5.0)) + 100).astype(np.uint16)
    for plane in (rng.normal(100, 10, (256, 256)).astype(np.float32), cam):
        res = count_objects(plane, "learned")
        assert res.count <= 3 and any("camera noise" in w for w in res.warnings)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_counting import _phase_contrast_like

    res = count_objects(_phase_contrast_like(), "learned")
    assert res.count == 0 and any("does not look like fluorescence" in w for w in res.warnings)


def test_dark_nuclei_on_bright_background(nuclei, counted):
    img, truth = nuclei
    inverted = (img.max() - img).astype(np.float32) + 100
    res = count_objects(inverted, "learned", polarity="dark")
    assert match_labels(truth, res.labels)["f1"] >= 0.8
    assert abs(res.count - counted.count) <= 0.1 * counted.count


def test_tiles_agree_with_one_pass(nuclei, counted, monkeypatch):
    monkeypatch.setattr(predict_mod, "TILE", 64)  # 320 px at 16/18 scale: 5 x 5 tiles
    tiled = count_objects(nuclei[0], "learned")
    m = match_labels(counted.labels, tiled.labels)
    assert m["f1"] >= 0.97, m


def test_given_diameter_sizes_and_border(nuclei, counted):
    img, _ = nuclei
    given = count_objects(img, "learned", diameter=18)
    assert given.diameter == 18 and abs(given.count - counted.count) <= 0.1 * counted.count
    areas = counted.table["area"].to_numpy()
    cut = float(np.median(areas))
    big_only = count_objects(img, "learned", diameter=18, min_size=cut)
    assert big_only.table["area"].min() >= cut * 0.9 and big_only.count < given.count
    inner = count_objects(img, "learned", diameter=18, exclude_border=True)
    lab = inner.labels
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    assert not edge.any() and inner.count < given.count


def test_stack_gets_one_diameter(nuclei):
    planes = [synthetic_nuclei((192, 192), seed=s, diameter=14, coverage=0.3)[0] for s in (21, 22)]
    empty = np.random.default_rng(4).normal(float(np.median(planes[0])), 1.0, (192, 192))
    res = count_stack(np.stack([planes[0], empty.astype(np.float32), planes[1]]), "learned")
    assert res.meta["diameter_source"] == "stack"
    assert res.plane_counts[1] <= 3 and res.plane_counts[0] > 10 and res.plane_counts[2] > 10


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(Sam3Error, match="classical"):
        load_network(tmp_path / "absent.safetensors")


def test_training_script_runs_and_writes_a_loadable_file(tmp_path):
    sys.path.insert(0, str(ROOT / "training"))
    import train_nucleus_net

    out = tmp_path / "net.safetensors"
    rc = train_nucleus_net.main(
        [
            "--steps",
            "3",
            "--batch",
            "2",
            "--synthetic-only",
            "--out",
            str(out),
            "--checkpoints",
            str(tmp_path / "ck"),
        ]
    )
    assert rc == 0
    net, meta = load_network(out)
    assert meta["steps"] == "3" and all(
        t.startswith("synthetic:") for t in json.loads(meta["trained_on"])
    )


def test_a_foreign_weights_file_via_the_env_var_is_one_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "mine.safetensors"
    bad.write_bytes(b"not a safetensors file")
    monkeypatch.setenv("NAPARI_SAM3_NUCLEUS_NET", str(bad))
    with pytest.raises(Sam3Error, match="NAPARI_SAM3_NUCLEUS_NET"):
        count_objects(synthetic_nuclei((96, 96), seed=1)[0], "learned", diameter=16)


@pytest.mark.parametrize("wrong", [0.5, 2.0])
def test_a_wrong_estimate_is_corrected_by_the_nuclei_found(nuclei, counted, monkeypatch, wrong):
    """The diameter estimate off by 2x: the network's nuclei say so and it looks again at theirs;
    a diameter the USER gives is used as given."""
    import napari_sam3.core.classical.screening as screening

    img, truth = nuclei
    true_d = counted.diameter
    monkeypatch.setattr(screening, "estimate_plane_diameter", lambda *a, **k: true_d * wrong)
    res = count_objects(img, "learned")
    # back inside the range of scales the network was trained at (training.SCALES)
    assert SCALES[0] <= true_d / res.diameter <= SCALES[-1], (res.diameter, true_d)
    assert match_labels(truth, res.labels)["f1"] >= 0.85
    given = count_objects(img, "learned", diameter=true_d * wrong)
    assert given.diameter == true_d * wrong


def test_cancel_between_tiles(nuclei, monkeypatch):
    import threading

    from napari_sam3.core.counting.count import iter_count
    from napari_sam3.core.errors import Cancelled
    from napari_sam3.core.progress import run_to_end

    monkeypatch.setattr(predict_mod, "TILE", 64)
    seen, cancel = [], threading.Event()

    def on_progress(p):
        if "tile" in p.message and p.total:
            seen.append(p.step)
            if len(seen) == 2:
                cancel.set()

    with pytest.raises(Cancelled):
        run_to_end(
            iter_count(nuclei[0], "learned", diameter=18), on_progress=on_progress, cancel=cancel
        )
    assert seen == [0, 1]  # stopped after the second tile of 25, not at the end


def test_a_hole_inside_one_nucleus_is_filled_but_a_gap_between_nuclei_is_not():
    from napari_sam3.core.learned.instances import fill_object_holes

    lab = np.zeros((20, 30), np.int32)
    lab[2:10, 2:10] = 1
    lab[4:7, 4:7] = 0  # a dark interior: a ring of foreground
    lab[2:10, 12:16] = 2  # two nuclei that enclose a gap between them
    lab[2:10, 18:22] = 3
    lab[2:4, 16:18] = 2
    lab[8:10, 16:18] = 3
    out = fill_object_holes(lab)
    assert (out[4:7, 4:7] == 1).all()
    assert (out[4:8, 16:18] == 0).all()
    assert (out[lab > 0] == lab[lab > 0]).all()
