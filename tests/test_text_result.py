"""Re-filtering never writes a result layer the user edited; Export measures the layer as it is now.

Qt-free: a napari ViewerModel, the Segment result session (`_napari.text_result`) and the export
adapter (`_napari.export_layer`), with candidates built from plain masks.
"""

import numpy as np
import pandas as pd
from napari.components import ViewerModel

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari.export_layer import export_layer
from napari_sam3._napari.text_result import TextResult, apply_prepared
from napari_sam3.core.results.candidates import Candidates


def _setup():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((40, 50)), name="img")
    ref = L.plane_ref(image, viewer.dims.point, viewer.dims.displayed, 2)
    masks = np.zeros((3, 40, 50), bool)
    masks[0, 2:10, 2:10] = masks[1, 20:30, 20:30] = masks[2, 30:38, 40:48] = True
    raw = Candidates.from_masks(masks, scores=np.array([0.9, 0.5, 0.2]), prompts="cell")
    res = TextResult(raw=raw, ref=ref, image=image, prompt_text="cell")
    adder = B.LayerAdder(viewer, lambda f: f())
    return viewer, res, adder


def _refilter(viewer, res, adder, threshold):
    prepared = L.prepare_result(res.raw, res.ref, res.prompt_text, threshold, 0, "Low")
    return apply_prepared(viewer, adder, res, prepared)


def test_untouched_layer_is_refiltered_in_place():
    viewer, res, adder = _setup()
    _refilter(viewer, res, adder, 0.1)
    layer = res.layer
    assert len(layer.features) == 3
    _refilter(viewer, res, adder, 0.6)
    assert res.layer is layer and len(layer.features) == 1 and len(viewer.layers) == 2


def test_edited_layer_keeps_pixels_and_undo_and_a_new_layer_is_driven():
    viewer, res, adder = _setup()
    _refilter(viewer, res, adder, 0.1)
    edited = res.layer
    edited.data_setitem((np.array([15, 15]), np.array([40, 41])), 7)  # a brush stroke, undoable
    snapshot = np.array(edited.data)
    text = _refilter(viewer, res, adder, 0.6)
    assert np.array_equal(edited.data, snapshot) and len(edited.features) == 3
    assert res.layer is not edited and res.layer in viewer.layers and len(res.layer.features) == 1
    assert f"Your edits are kept in '{edited.name}'" in text
    edited.undo()
    assert edited.data[15, 40] == 0  # history intact
    _refilter(viewer, res, adder, 0.1)  # the new, untouched layer is updated in place
    assert len(res.layer.features) == 3 and len(viewer.layers) == 3


def test_export_measures_the_edited_pixels(tmp_path):
    viewer, res, adder = _setup()
    _refilter(viewer, res, adder, 0.1)
    layer = res.layer
    layer.data_setitem((np.array([0, 0, 1]), np.array([45, 46, 45])), 9)
    paths = export_layer(viewer, layer, tmp_path, ("tiff", "coco", "pairs"))
    table = pd.read_csv(paths["objects_csv"])
    assert list(table["label"]) == [1, 2, 3, 9]
    assert table.set_index("label").loc[9, "area"] == 3
    np.testing.assert_allclose(table.set_index("label").loc[[1, 2, 3], "score"], [0.9, 0.5, 0.2])
    assert paths["coco"].exists() and not (tmp_path / ".parts").exists()
    assert paths["pair_image"].exists() and paths["pair_mask"].exists()
