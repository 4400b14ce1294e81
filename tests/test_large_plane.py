"""Large planes are counted in overlapping tiles; the stitched result matches a whole-plane count."""

import numpy as np
import pandas as pd
import pytest

from napari_sam3.core.counting.count import count_objects
from napari_sam3.core.counting.large_plane import iter_count_large_plane
from napari_sam3.core.progress import run_to_end
from napari_sam3.core.results.measure import count_distinct, match_labels
from napari_sam3.core.results.objects import objects_table
from napari_sam3.core.synthetic import synthetic_nuclei


@pytest.mark.slow
def test_tiled_count_matches_whole_plane_and_its_table_matches_its_labels():
    image, truth = synthetic_nuclei((700, 650), seed=3, diameter=16.0)
    whole = count_objects(image, diameter=16.0)
    labels, table, d = run_to_end(iter_count_large_plane(image, 16.0, tile=200, scale=(0.5, 0.5)))
    assert d == 16.0 and labels.shape == image.shape
    n = count_distinct(labels)
    assert len(table) == n
    assert abs(n - whole.count) <= 0.03 * whole.count  # seams cost at most a few objects
    assert match_labels(truth, labels)["f1"] >= match_labels(truth, whole.labels)["f1"] - 0.03
    # the table measured at paste time is the table of the final label image
    again = objects_table(labels, prompts="learned", scale=(0.5, 0.5))  # the default method
    pd.testing.assert_frame_equal(table, again)
    assert table["label"].is_unique


@pytest.mark.slow
def test_tiled_count_estimates_one_diameter_for_every_tile():
    image, _ = synthetic_nuclei((500, 500), seed=4, diameter=14.0)
    labels, table, d = run_to_end(iter_count_large_plane(image, None, tile=160))
    assert 8 < d < 24 and len(table) == count_distinct(labels) > 100
    assert np.all(table["visible_area"] > 0)
