"""The image-layer and channel choosers shared by the Segment and Count tabs, and the viewer-layer
watching that keeps them current. Qt wiring only."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout

RGB_CHANNELS = ("RGB", "Red", "Green", "Blue")  # index - 1 is the channel; "RGB" uses all three
GRAY_CHANNELS = ("Gray",)
LAYER_LIST_EVENTS = ("inserted", "removed", "reordered")


def fill_combo(combo: QComboBox, names: list[str]) -> None:
    """Show ``names`` in ``combo`` (no signals), keeping the current choice when it is still there."""
    names = list(names)
    if [combo.itemText(i) for i in range(combo.count())] == names:
        return
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def layers_of(viewer, kind: str) -> list:
    """The viewer's ``"image"`` or ``"labels"`` layers, in layer-list order."""
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    return [layer for layer in viewer.layers if isinstance(layer, cls)]


def watch_layer_list(viewer, callback) -> list[tuple]:
    """Call ``callback`` when layers are added, removed or reordered; returns what to unwatch."""
    watched = []
    for name in LAYER_LIST_EVENTS:
        emitter = getattr(viewer.layers.events, name)
        emitter.connect(callback)
        watched.append((emitter, callback))
    return watched


def unwatch(watched: list[tuple]) -> None:
    """Disconnect what `watch_layer_list` connected (the viewer may already be gone)."""
    for emitter, callback in watched:
        try:
            emitter.disconnect(callback)
        except Exception:  # noqa: BLE001 - closing: nothing to do about it
            pass


class ImageChoice:
    """An "Image" combo (the viewer's image layers) and a "Channel" combo (RGB / one colour / gray),
    added as two rows of ``form``."""

    def __init__(
        self, viewer, form: QFormLayout, image_tooltip: str = "", channel_tooltip: str = ""
    ) -> None:
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.image_combo.setToolTip(image_tooltip)
        self.image_combo.currentIndexChanged.connect(self.update_channels)
        form.addRow("Image", self.image_combo)
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip(channel_tooltip)
        form.addRow("Channel", self.channel_combo)

    def refresh(self) -> None:
        """Re-read the image layers (keeping the current one) and its channel options."""
        fill_combo(self.image_combo, [layer.name for layer in layers_of(self.viewer, "image")])
        self.update_channels()

    def update_channels(self, *args) -> None:
        layer = self.layer()
        options = RGB_CHANNELS if layer is not None and layer.rgb else GRAY_CHANNELS
        fill_combo(self.channel_combo, options)
        self.channel_combo.setEnabled(len(options) > 1)

    def layer(self):
        """The chosen image layer, or None."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def channel(self) -> int | None:
        """The chosen colour channel of an RGB image (0, 1, 2), or None for all / gray."""
        index = self.channel_combo.currentIndex()
        return index - 1 if self.channel_combo.count() > 1 and index > 0 else None
