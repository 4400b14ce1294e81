"""Journey: annotate beyond one run. Review a text result (A / R keys on the layer), Export leaves the
rejected object out; the exemplars drawn on one image find objects in another; a clicked object is
propagated through a stack. Run by test_journeys.py in a fresh process with the video-capable tiny
checkpoint (make_tiny_checkpoint(folder, video=True))."""

import numpy as np
from driver import Journey, blobs, run


def review_and_export(j: Journey) -> None:
    """Text run -> Review objects… -> accept one, reject one -> Export drops the rejected one."""
    import pandas as pd

    from napari_sam3._qt.review_panel import open_review_panel
    from napari_sam3.io.tiff import read_labels_tiff

    seg = j.seg
    seg.threshold_slider.setValue(5)
    seg.concepts_edit.setText("cell")
    seg.run_btn.click()
    j.wait(lambda: "cell · A" in j.viewer.layers, "the text result")
    layer = j.layer("cell · A")
    assert len(layer.features) >= 2, "the tiny model found fewer than two objects"
    seg.review_btn.click()
    panel = open_review_panel(j.viewer)
    j.viewer.layers.selection.active = layer
    j.process(0.2)
    assert panel.model.rowCount() == len(layer.features)
    first, second = (int(v) for v in layer.features["label"][:2])
    layer.selected_label = first
    panel.buttons["accept"].click()
    layer.selected_label = second
    panel.buttons["reject"].click()
    status = dict(zip(layer.features["label"], layer.features["status"], strict=True))
    assert status[first] == "accepted" and status[second] == "rejected", status
    assert "1 rejected" in panel.title.text(), panel.title.text()
    paths = j.widget.export_box.export(folder=str(j.out / "export"))
    assert paths is not None, j.notes
    saved = read_labels_tiff(paths["labels_tiff"]).data
    table = pd.read_csv(paths["objects_csv"])
    assert second not in set(np.unique(saved)) and second not in set(table["label"])
    assert first in set(np.unique(saved)) and first in set(table["label"])
    j.screenshot("reviewed_exported")


def exemplars_on_another_image(j: Journey) -> None:
    seg = j.seg
    seg.concepts_edit.setText("")
    seg.image_combo.setCurrentText("A")
    _, boxes = seg.add_prompt_layers()
    boxes.add_rectangles(np.array([[[14, 20], [14, 40], [34, 40], [34, 20]]], float))
    seg.exemplar_target_combo.setCurrentText("B")
    assert seg.exemplar_transfer_btn.isEnabled()
    seg.exemplar_transfer_btn.click()

    def result():
        found = [n for n in j.layer_names() if n.startswith("exemplars from A") and "B" in n]
        return found[0] if found else None

    j.wait(lambda: result() is not None, "the exemplars on B")
    layer = j.layer(result())
    assert layer.data.shape == j.layer("B").data.shape and len(layer.features) > 0
    assert "status" in layer.features  # it joins the review table
    j.screenshot("exemplars_on_B")


def propagate_a_click(j: Journey) -> None:
    seg = j.seg
    seg.image_combo.setCurrentText("stack")
    j.viewer.dims.set_current_step(0, 0)
    clicks, _ = seg.add_prompt_layers()
    clicks.add([[0, 24, 30]])  # object 1 on slice 0 (row 24, column 30)
    seg.propagate_btn.click()
    j.wait(lambda: "SAM3 objects: stack" in j.viewer.layers, "the propagation")
    layer = j.layer("SAM3 objects: stack")
    assert layer.data.shape == j.layer("stack").data.shape
    assert layer.features["label"].tolist() == [1]
    j.screenshot("propagated")


def steps(j: Journey) -> None:
    j.viewer.add_image(blobs(seed=0), name="A")
    j.viewer.add_image(blobs(centers=((30, 70), (70, 30), (50, 90)), seed=1), name="B")
    j.viewer.add_image(np.stack([blobs(seed=t) for t in range(2)]), name="stack")
    j.open_dock()
    j.seg.image_combo.setCurrentText("A")
    for step in (review_and_export, exemplars_on_another_image, propagate_a_click):
        step(j)
        j.lap(step.__name__)


if __name__ == "__main__":
    run(steps)
