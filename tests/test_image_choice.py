"""The image / channel choosers both tabs share (run under ``xvfb-run -a``)."""

import numpy as np
import pytest
from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_sam3._qt.image_choice import ImageChoice, fill_combo, unwatch, watch_layer_list

pytestmark = pytest.mark.gui


def test_fill_combo_keeps_choice_and_emits_nothing(qtbot):
    combo = QComboBox()
    qtbot.addWidget(combo)
    fill_combo(combo, ["a", "b"])
    combo.setCurrentText("b")
    changes = []
    combo.currentIndexChanged.connect(changes.append)
    fill_combo(combo, ["c", "b"])
    assert combo.currentText() == "b" and changes == []
    fill_combo(combo, ["c"])
    assert [combo.itemText(i) for i in range(combo.count())] == ["c"]


def test_image_choice_follows_layers_and_channels(qtbot):
    from napari.components import ViewerModel

    viewer = ViewerModel()  # layers and their events, without a window or plugin set-up
    host = QWidget()
    qtbot.addWidget(host)
    form = QFormLayout(host)
    choice = ImageChoice(viewer, form, "image tip", "channel tip")
    assert form.rowCount() == 2 and choice.image_combo.toolTip() == "image tip"
    calls = []
    watched = watch_layer_list(viewer, lambda event=None: (calls.append(1), choice.refresh()))
    assert choice.layer() is None
    viewer.add_image(np.zeros((8, 8)), name="gray")
    assert choice.layer().name == "gray" and choice.channel() is None
    assert not choice.channel_combo.isEnabled()
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")  # not an image: not offered
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="colour", rgb=True)
    assert [choice.image_combo.itemText(i) for i in range(2)] == ["gray", "colour"]
    choice.image_combo.setCurrentText("colour")  # the channel choices follow the image
    assert choice.channel_combo.count() == 4 and choice.channel_combo.isEnabled()
    choice.channel_combo.setCurrentText("Blue")
    assert choice.channel() == 2
    choice.channel_combo.setCurrentText("RGB")
    assert choice.channel() is None
    unwatch(watched)
    n = len(calls)
    viewer.layers.remove("gray")
    assert len(calls) == n  # no longer watched
    unwatch(watched)  # twice is harmless
