"""THE objects table: O(pixels) memory, the same columns from every caller, numbers from regionprops."""

import tracemalloc

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from napari_sam3._writer import write_labels
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.columns import EXPORT_COLUMNS
from napari_sam3.core.results.objects import objects_table
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io.tables import candidates_table as candidates_export_table
from napari_sam3.io.tables import read_table_csv, table_from_labels


def test_memory_is_bounded_by_pixels_not_objects_times_pixels():
    _, labels = synthetic_nuclei((1024, 1024), seed=2, diameter=12.0)
    labels = labels.astype(np.uint32)
    n = len(np.unique(labels)) - 1
    assert n > 3000  # a dense (N, H, W) bool stack would need n MiB: > 3 GiB
    tracemalloc.start()
    table = table_from_labels(labels, prompt="x", scale=(0.5, 0.5))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(table) == n
    assert peak < 40 * labels.nbytes  # a handful of full-size passes, never n of them


def test_geometry_matches_regionprops_with_gapped_ids():
    _, labels = synthetic_nuclei((300, 280), seed=5)
    labels = np.where(labels > 0, labels * 7 + 3, 0).astype(np.int32)  # gaps in the ids
    ours = objects_table(labels)
    ref = pd.DataFrame(regionprops_table(labels, properties=("label", "area", "centroid", "bbox")))
    assert tuple(ours.columns) == EXPORT_COLUMNS
    np.testing.assert_array_equal(ours["label"], ref["label"])
    np.testing.assert_array_equal(ours["area"], ref["area"])
    np.testing.assert_allclose(ours["centroid_y"], ref["centroid-0"])
    np.testing.assert_allclose(ours["centroid_x"], ref["centroid-1"])
    for ours_col, ref_col in zip(
        ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"), range(4), strict=True
    ):
        np.testing.assert_array_equal(ours[ours_col], ref[f"bbox-{ref_col}"])
    assert (ours["visible_area"] == ours["area"]).all()


def test_same_columns_from_candidates_labels_and_the_napari_writer(tmp_path):
    masks = np.zeros((2, 40, 40), bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 10:30, 10:30] = True  # overlaps the first; it wins on score
    cands = Candidates.from_masks(masks, scores=np.array([0.5, 0.9]), prompts="cell")
    painted = cands.to_label_image()
    from_cands = candidates_export_table(cands, label_image=painted)
    assert tuple(from_cands.columns) == EXPORT_COLUMNS
    row = from_cands.set_index("label").loc[1]
    assert row["area"] == 225 and row["visible_area"] == 225 - 100  # whole mask vs what shows
    from_labels = table_from_labels(painted, prompt="cell")
    assert tuple(from_labels.columns) == EXPORT_COLUMNS
    features = cands.table(label_image=painted)
    written = write_labels(str(tmp_path / "seg.tif"), painted, {"features": features})
    from_writer = read_table_csv(written[1])
    assert tuple(from_writer.columns) == EXPORT_COLUMNS
    np.testing.assert_allclose(from_writer["score"], [0.5, 0.9], rtol=1e-6)
    assert from_writer["prompt"].tolist() == ["cell", "cell"]


def test_napari_writer_never_replaces_an_existing_objects_csv(tmp_path):
    mine = tmp_path / "seg_objects.csv"
    mine.write_text("my own notes\n")
    labels = np.zeros((20, 20), np.uint16)
    labels[2:6, 2:6] = 1
    written = write_labels(str(tmp_path / "seg.tif"), labels, {})
    assert mine.read_text() == "my own notes\n"
    assert written[1] == str(tmp_path / "seg_objects-2.csv")
    assert len(read_table_csv(written[1])) == 1
