"""--tile routes SAM3 through core.counting's tiling (stitched, de-duplicated) on the tiny model."""

import numpy as np
import tifffile

from napari_sam3.cli import main
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io import read_labels_tiff, read_table_csv


def test_segment_and_count_with_tiles(tmp_path, tiny_checkpoint):
    img, _ = synthetic_nuclei((300, 260), seed=3)
    tifffile.imwrite(tmp_path / "big.tif", img)
    common = [
        "--prompt",
        "nucleus",
        "--model",
        str(tiny_checkpoint),
        "--threshold",
        "0.2",
        "--no-progress",
    ]
    out = tmp_path / "seg"
    assert (
        main(["segment", str(tmp_path / "big.tif"), "--tile", "128", "--out", str(out), *common])
        == 0
    )
    labels = read_labels_tiff(out / "big_labels.tif").data
    table = read_table_csv(out / "big_objects.csv")
    assert labels.shape == (300, 260)
    # the table has one row per distinct id of the stitched label image, with SAM3 scores
    assert list(table["label"]) == sorted(set(np.unique(labels)) - {0})
    assert (table["score"].dropna() >= 0.2).all()
    assert (table["bbox_y1"] <= 300).all() and (table["bbox_x1"] <= 260).all()
    man = read_table_csv(out / "counts.csv")
    assert man.loc[0, "count"] == len(table)
    cnt = tmp_path / "cnt"
    assert (
        main(
            [
                "count",
                str(tmp_path / "big.tif"),
                "--method",
                "sam3",
                "--tile",
                "none",
                "--out",
                str(cnt),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(["segment", str(tmp_path / "big.tif"), "--tile", "12", "--out", str(cnt), *common])
        == 2
    )  # too small: usage error
