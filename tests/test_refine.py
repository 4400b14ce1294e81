"""Mask refinement (core.results.refine) and the filter chain, without a screen; and ``segment --refine``
end to end through the CLI on the tiny checkpoint (the refinement must reach the written labels and
manifest)."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam3.batch import process
from napari_sam3.cli import build_parser, main, settings_from_args
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.refine import (
    REFINEMENT_LEVELS,
    check_level,
    filter_candidates,
    refine_label_image,
    refine_mask,
    refine_masks,
)
from napari_sam3.io import read_labels_tiff


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _holey_disk(shape=(60, 60)):
    mask = _disk(shape, 30, 30, 15)
    mask[30, 30] = False  # a small hole
    mask[2, 2] = True  # a speck
    return mask


def test_refinement_levels():
    mask = _holey_disk()
    cands = Candidates.from_masks(mask[None], scores=np.array([0.8]))
    assert refine_masks(cands, "Low") is cands
    med = refine_masks(cands, "Medium")
    assert med.masks[0][30, 30] and not med.masks[0][2, 2]
    np.testing.assert_array_equal(med.boxes[0], [15, 15, 46, 46])  # boxes recomputed
    assert med.scores[0] == pytest.approx(0.8)
    high = refine_masks(cands, "high").masks[0]  # any case
    assert high[30, 30] and not high[2, 2]
    assert abs(int(high.sum()) - int(mask.sum())) < 0.1 * mask.sum()
    with pytest.raises(Sam3Error, match="Low, Medium, High"):
        refine_masks(cands, "Ultra")
    assert check_level("MEDIUM") == "Medium" and REFINEMENT_LEVELS[0] == "Low"


def test_refine_mask_keeps_empty_and_thin_objects():
    empty = np.zeros((10, 10), bool)
    assert not refine_mask(empty, "High").any()
    line = np.zeros((20, 20), bool)
    line[10, 2:18] = True  # smoothing erases it: the raw one is kept
    np.testing.assert_array_equal(refine_mask(line, "High"), line)


def test_filter_candidates_order_and_empty():
    shape = (60, 60)
    masks = np.stack([_holey_disk(shape), _disk(shape, 5, 50, 3), _disk(shape, 50, 50, 6)])
    cands = Candidates.from_masks(masks, scores=np.array([0.9, 0.8, 0.3]), prompts="cell")
    out = filter_candidates(cands, min_score=0.5, min_area=40, refine="Medium")
    assert len(out) == 1 and out.masks[0][30, 30]  # threshold, refine, then min area
    assert len(filter_candidates(cands, 0.95, 0, "High")) == 0
    none = Candidates.empty(shape)
    for level in REFINEMENT_LEVELS:
        assert len(filter_candidates(none, 0.5, 10, level)) == 0
    with pytest.raises(Sam3Error):
        filter_candidates(cands, 0.5, 0, "ultra")


def test_refine_label_image_keeps_ids_and_neighbours():
    shape = (60, 80)
    labels = np.zeros(shape, np.uint16)
    labels[_holey_disk(shape)] = 7
    labels[20:40, 50:70] = 3
    labels[30, 60] = 0  # a hole in the square
    out = refine_label_image(labels, "Medium")
    assert out[30, 30] == 7 and out[30, 60] == 3 and out[2, 2] == 0
    assert set(np.unique(out)) == {0, 3, 7}
    assert refine_label_image(labels, "Low") is labels
    assert refine_label_image(np.zeros((0, 0), np.uint16), "High").shape == (0, 0)
    # growth takes background only: two touching squares never take each other's pixels
    two = np.zeros((30, 30), np.uint8)
    two[5:25, 5:15] = 1
    two[5:25, 15:25] = 2
    high = refine_label_image(two, "High")
    assert (high[two == 2] != 1).all() and (high[two == 1] != 2).all()


# ------------------------------------------------------------------------------ CLI / batch
def test_cli_refine_option_parses_and_is_recorded():
    parser = build_parser()
    args = parser.parse_args(
        ["segment", "a.tif", "--prompt", "x", "--out", "o", "--refine", "HIGH"]
    )
    settings = settings_from_args(args)
    assert settings.refine == "high" and settings.result_fields()["refine"] == "high"
    default = settings_from_args(
        parser.parse_args(["segment", "a.tif", "--prompt", "x", "--out", "o"])
    )
    assert default.refine == "low" and default.fingerprint() != settings.fingerprint()
    count = settings_from_args(parser.parse_args(["count", "a.tif", "--out", "o"]))
    assert "refine" not in count.result_fields()
    assert main(["segment", "a.tif", "--prompt", "x", "--out", "o", "--refine", "ultra"]) == 2
    assert main(["count", "a.tif", "--out", "o", "--refine", "high"]) == 2  # segment only


def test_segment_refine_reaches_outputs(tmp_path, tiny_checkpoint):
    """The real CLI on the tiny SAM3 checkpoint: High fills every object's holes, Low keeps the raw
    masks, and the level is recorded in the manifest and the per-image record."""
    from scipy import ndimage as ndi
    from skimage.data import coins

    tifffile.imwrite(tmp_path / "img.tif", coins()[:160, :160])
    found = {}
    for level in ("low", "high"):
        out = tmp_path / level
        argv = [
            "segment",
            str(tmp_path / "img.tif"),
            "--prompt",
            "coin",
            "--out",
            str(out),
            "--model",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            "--threshold",
            "0.1",
        ]
        assert main([*argv, "--refine", level, "--no-progress"]) == 0
        found[level] = read_labels_tiff(out / "img_labels.tif").data
        man = json.loads((out / "manifest.json").read_text())
        assert man["settings"]["refine"] == level
        rec = json.loads((out / ".done" / "img.json").read_text())
        assert rec["provenance"]["refine"] == level
    assert found["low"].any() and not np.array_equal(found["low"], found["high"])
    for obj in np.unique(found["high"])[1:]:
        mask = found["high"] == obj
        assert np.array_equal(ndi.binary_fill_holes(mask), mask), f"object {obj} has holes"
    # another level is another result: a rerun into the same folder asks for --overwrite
    argv = [
        "segment",
        str(tmp_path / "img.tif"),
        "--prompt",
        "coin",
        "--out",
        str(tmp_path / "low"),
        "--model",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*argv, "--refine", "medium"]) == 1
    assert main([*argv, "--refine", "medium", "--overwrite"]) == 0


def test_tiled_segment_refines_the_stitched_labels(monkeypatch):
    """``--tile`` goes through core.counting; refinement then works on the stitched label image and
    the table follows it (ids, scores and prompts kept)."""
    import pandas as pd

    from napari_sam3.batch.settings import BatchSettings
    from napari_sam3.io.readers import Plane

    labels = np.zeros((60, 60), np.uint16)
    labels[_holey_disk()] = 4
    src = pd.DataFrame({"label": [4], "score": [0.7], "prompt": ["disk"]})
    monkeypatch.setattr(process, "get_engine", lambda settings: None)
    monkeypatch.setattr(
        process,
        "_count_sam3",
        lambda plane, settings, engine, tile, progress: (
            labels,
            process.table_with_labels(labels, src),
            None,
        ),
    )
    plane = Plane(np.zeros((60, 60), np.uint8), "x.tif", "x")
    for level, hole in (("low", 0), ("high", 4)):
        settings = BatchSettings(prompts=("disk",), tile=128, refine=level)
        out, table, cands = process._segment(plane, settings)
        assert cands is None and out[30, 30] == hole and out[2, 2] == (4 if level == "low" else 0)
        row = table.iloc[0]
        assert (row["label"], row["prompt"], row["score"]) == (4, "disk", pytest.approx(0.7))
        assert row["area"] == int((out == 4).sum())
