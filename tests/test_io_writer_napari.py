"""The npe2 writer through napari's own save path (no viewer, no display needed)."""

import numpy as np
import pandas as pd
import pytest

from napari_sam3.io import read_labels_tiff, read_table_csv


def test_layer_save_with_our_writer(tmp_path):
    napari = pytest.importorskip("napari")
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    lab = np.zeros((30, 40), np.uint16)
    lab[2:8, 3:9] = 1
    lab[10:20, 10:30] = 3  # ids with a gap
    feat = pd.DataFrame(
        {"label": [1, 3], "prompt": ["cell", "cell"], "score": [0.9, 0.7], "area": [36, 200]}
    )
    layer = napari.layers.Labels(lab, features=feat, scale=(0.5, 0.5), name="seg")
    written = layer.save(str(tmp_path / "seg.tif"), plugin="napari-sam3")
    assert written == [str(tmp_path / "seg.tif"), str(tmp_path / "seg_objects.csv")]
    back = read_labels_tiff(written[0])
    np.testing.assert_array_equal(back.data, lab)
    assert back.scale == pytest.approx((0.5, 0.5))
    table = read_table_csv(written[1])
    assert list(table["label"]) == [1, 3] and list(table["score"]) == [0.9, 0.7]
