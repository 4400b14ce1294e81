"""Layer identity survives napari's plugin proxies (a new proxy object per ``viewer.layers[...]``)."""

import numpy as np
from napari.components import ViewerModel
from napari.layers import Image
from napari.utils._proxies import PublicOnlyProxy

from napari_sam3._napari import identity as I
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P


def test_prompt_layers_found_through_fresh_proxies():
    model = ViewerModel()
    viewer = PublicOnlyProxy(model)  # what napari hands a plugin widget
    viewer.add_image(np.zeros((20, 30)), name="img")
    first, second = viewer.layers["img"], viewer.layers["img"]
    assert first is not second  # the trap: id() differs per access
    ref = L.plane_ref(first, model.dims.point, model.dims.displayed, 2)
    clicks = P.make_clicks_layer(viewer, first, ref)
    assert P.find_prompt_layer(viewer, "clicks", second) is I.unwrap(clicks)
    assert P.make_clicks_layer(viewer, viewer.layers["img"], ref) is I.unwrap(clicks)  # reused
    assert I.find_layer(viewer, ref.image_uid) is model.layers["img"]
    assert I.same_layer(first, second) and I.in_viewer(viewer, second)


def test_a_copied_layer_gets_its_own_uid():
    original = Image(np.zeros((5, 5)))
    uid = I.layer_uid(original)
    copy = Image(np.zeros((5, 5)), metadata=dict(original.metadata))  # as Duplicate Layer does
    assert I.layer_uid(copy) != uid and I.layer_uid(original) == uid
