"""Exporters: every format round-trips; writes are atomic and never clobber without overwrite."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam3 import Candidates, Sam3Error
from napari_sam3.io import (
    atomic_path,
    candidates_from_coco,
    coco_from_candidates,
    coco_from_labels,
    export_plane,
    export_training_pair,
    load_coco,
    merge_coco,
    objects_table,
    parse_formats,
    read_labels_png,
    read_labels_tiff,
    read_pair,
    read_pairs_manifest,
    read_table_csv,
    write_coco,
    write_labels_png,
    write_labels_tiff,
    write_table_csv,
)
from napari_sam3.io.manifest import provenance
from napari_sam3.io.tables import OBJECT_COLUMNS


@pytest.fixture
def cands():
    """Four candidates, two concepts, one overlap (the higher score wins), one hidden object."""
    m = np.zeros((4, 40, 50), bool)
    m[0, 5:15, 5:20] = True
    m[1, 10:30, 10:25] = True  # overlaps 0, higher score
    m[2, 30:38, 30:48] = True
    m[3, 12:14, 12:14] = True  # completely under 1, lower score: hidden
    return Candidates.from_masks(
        m, np.array([0.61, 0.93, 0.3, 0.2], np.float32), ["nucleus", "cell", "nucleus", "cell"]
    )


def test_tiff_roundtrip_uint16_with_scale_is_imagej(tmp_path, cands):
    labels = cands.to_label_image()
    p = write_labels_tiff(tmp_path / "l.tif", labels, scale=(0.5, 0.25))
    back = read_labels_tiff(p)
    assert back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, labels)
    assert back.axes == "YX" and back.unit == "micron"
    assert back.scale == pytest.approx((0.5, 0.25))
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej
        assert tif.pages.first.compression != 1  # compressed


def test_tiff_3d_spacing_and_uint32(tmp_path):
    vol = np.zeros((3, 20, 30), np.int64)
    vol[1, 2:5, 3:9] = 7
    back = read_labels_tiff(write_labels_tiff(tmp_path / "v.tif", vol, scale=(2.0, 0.3, 0.3)))
    assert back.axes == "ZYX" and back.data.dtype == np.uint16
    assert back.scale == pytest.approx((2.0, 0.3, 0.3), rel=1e-5)
    np.testing.assert_array_equal(back.data, vol)

    big = np.zeros((20, 30), np.uint32)
    big[3:6, 3:6] = 70_000  # does not fit uint16
    back = read_labels_tiff(write_labels_tiff(tmp_path / "b.tif", big, scale=(0.65, 0.65)))
    assert back.data.dtype == np.uint32
    np.testing.assert_array_equal(back.data, big)
    assert back.scale == pytest.approx((0.65, 0.65))


def test_no_clobber_and_overwrite(tmp_path, cands):
    p = tmp_path / "l.tif"
    write_labels_tiff(p, cands.to_label_image())
    before = p.read_bytes()
    with pytest.raises(Sam3Error, match="--overwrite"):
        write_labels_tiff(p, np.zeros((5, 5), np.uint16))
    assert p.read_bytes() == before
    write_labels_tiff(p, np.ones((9, 9), np.uint16), overwrite=True)
    assert read_labels_tiff(p).data.shape == (9, 9)
    (tmp_path / "m_objects.csv").write_text("mine")
    with pytest.raises(Sam3Error, match="--overwrite"):
        export_plane(tmp_path, "m", candidates=cands)
    # every path is checked before anything is written: nothing half-done
    assert not (tmp_path / "m_labels.tif").exists()
    assert (tmp_path / "m_objects.csv").read_text() == "mine"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_png_roundtrip_and_limits(tmp_path, cands):
    labels = cands.to_label_image()
    np.testing.assert_array_equal(
        read_labels_png(write_labels_png(tmp_path / "l.png", labels)), labels
    )
    with pytest.raises(Sam3Error, match="16-bit"):
        write_labels_png(tmp_path / "big.png", np.full((4, 4), 70_000, np.uint32))
    with pytest.raises(Sam3Error, match="2-D"):
        write_labels_png(tmp_path / "v.png", np.zeros((2, 4, 4), np.uint16))


def test_table_csv_roundtrip_exact_scores(tmp_path, cands):
    labels = cands.to_label_image()
    table = objects_table(cands, label_image=labels)
    assert tuple(table.columns[: len(OBJECT_COLUMNS)]) == OBJECT_COLUMNS
    back = read_table_csv(write_table_csv(tmp_path / "o.csv", table))
    np.testing.assert_array_equal(back["score"].to_numpy(np.float32), cands.scores)
    assert list(back["prompt"]) == list(cands.prompts)
    assert list(back["label"]) == [1, 2, 3, 4]
    assert back.loc[3, "visible_area"] == 0 and back.loc[3, "area"] == 4  # hidden, kept
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_coco_roundtrip_with_pycocotools(tmp_path, cands):
    coco = coco_from_candidates(cands, file_name="img.tif")
    path = write_coco(tmp_path / "c.json", coco)
    api = load_coco(path)
    assert sorted(c["name"] for c in api.loadCats(api.getCatIds())) == ["cell", "nucleus"]
    anns = api.loadAnns(api.getAnnIds(imgIds=[1]))
    assert len(anns) == 4 and all("score" in a for a in anns)
    # pycocotools decodes every mask back to the original
    for a in anns:
        np.testing.assert_array_equal(api.annToMask(a).astype(bool), cands.masks[a["label"] - 1])
    back = candidates_from_coco(path)
    np.testing.assert_array_equal(back.to_label_image(), cands.to_label_image())
    np.testing.assert_array_equal(back.scores, cands.scores)
    assert list(back.prompts) == list(cands.prompts)
    # results API too (score on every annotation)
    res = api.loadRes([dict(a) for a in anns])
    assert len(res.getAnnIds()) == 4


def test_coco_from_labels_and_merge_renumbers(tmp_path, cands):
    labels = cands.to_label_image()
    table = objects_table(cands, label_image=labels)
    one = coco_from_labels(labels, table, file_name="a.tif")
    assert len(one["annotations"]) == 3  # the hidden object has no pixels in the label image
    two = coco_from_candidates(cands.subset([2]), file_name="b.tif")  # only "nucleus"
    merged = merge_coco([one, two])
    assert [i["id"] for i in merged["images"]] == [1, 2]
    assert [a["id"] for a in merged["annotations"]] == list(range(1, 5))
    names = {c["id"]: c["name"] for c in merged["categories"]}
    assert sorted(names.values()) == ["cell", "nucleus"]
    assert names[merged["annotations"][-1]["category_id"]] == "nucleus"
    load_coco(write_coco(tmp_path / "m.json", merged))


def test_training_pairs_and_manifest(tmp_path, cands):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (40, 50)).astype(np.uint16)
    labels = cands.to_label_image()
    info = provenance(
        source="/data/a.tif",
        slice_label="z=3",
        model="facebook/sam3",
        prompts=["nucleus", "cell"],
        threshold=0.5,
        mask_threshold=0.5,
    )
    export_training_pair(tmp_path, "a_z003", image, labels, info)
    img, mask = read_pair(tmp_path, "a_z003")
    np.testing.assert_array_equal(img, image)
    np.testing.assert_array_equal(mask, labels)
    with pytest.raises(Sam3Error, match="--overwrite"):
        export_training_pair(tmp_path, "a_z003", image, labels, info)
    export_training_pair(tmp_path, "a_z003", image, labels, info, overwrite=True)
    export_training_pair(tmp_path, "b", image[..., None].repeat(3, -1).astype(np.uint8), labels, {})
    doc = read_pairs_manifest(tmp_path)
    assert [e["stem"] for e in doc["pairs"]] == ["a_z003", "b"]  # replaced, not duplicated
    e = doc["pairs"][0]
    for key in (
        "source",
        "slice",
        "model",
        "prompts",
        "threshold",
        "mask_threshold",
        "versions",
        "date",
    ):
        assert key in e
    assert e["image"] == "images/a_z003.tif" and e["mask"] == "masks/a_z003.tif"


def test_export_plane_all_formats(tmp_path, cands):
    image = np.zeros((40, 50), np.uint8)
    paths = export_plane(
        tmp_path,
        "s",
        candidates=cands,
        image=image,
        scale=(0.5, 0.5),
        formats=parse_formats("tiff,png,coco,pairs"),
    )
    assert all(p.exists() for p in paths.values())
    assert not list(tmp_path.rglob(".sam3tmp-*"))
    coco = json.loads(paths["coco_part"].read_text())
    assert coco["images"][0]["file_name"] == "pairs/images/s.tif"
    with pytest.raises(Sam3Error, match="Unknown format"):
        parse_formats("tiff,jpeg")


def test_napari_writer(tmp_path, cands):
    from napari_sam3._writer import write_labels

    labels = cands.to_label_image()
    features = cands.table(label_image=labels)
    out = write_labels(
        str(tmp_path / "layer.tif"),
        labels,
        {"name": "SAM3 cell", "scale": (0.4, 0.4), "features": features},
    )
    assert out == [str(tmp_path / "layer.tif"), str(tmp_path / "layer_objects.csv")]
    back = read_labels_tiff(out[0])
    np.testing.assert_array_equal(back.data, labels)
    assert back.scale == pytest.approx((0.4, 0.4))
    table = read_table_csv(out[1])
    # one row per object in the TIFF beside it (as Export): an object hidden by overlaps has none
    shown = np.isin(np.arange(1, len(cands) + 1), np.unique(labels))
    assert not shown.all() and table["label"].tolist() == list(np.flatnonzero(shown) + 1)
    np.testing.assert_array_equal(table["score"].to_numpy(np.float32), cands.scores[shown])
    # no features: the table is measured from the labels; 3-D labels: TIFF only
    out = write_labels(str(tmp_path / "plain.tif"), labels, {"features": pd.DataFrame()})
    assert len(read_table_csv(out[1])) == len(np.unique(labels)) - 1
    assert len(write_labels(str(tmp_path / "vol.tif"), np.zeros((2, 8, 8), np.uint16), {})) == 1


def test_empty_result_exports(tmp_path):
    paths = export_plane(
        tmp_path, "e", candidates=Candidates.empty((20, 24)), formats=("tiff", "png", "coco")
    )
    assert read_labels_tiff(paths["labels_tiff"]).data.max() == 0
    table = read_table_csv(paths["objects_csv"])
    assert len(table) == 0 and tuple(table.columns[: len(OBJECT_COLUMNS)]) == OBJECT_COLUMNS
    assert load_coco(paths["coco_part"]).getAnnIds() == []
