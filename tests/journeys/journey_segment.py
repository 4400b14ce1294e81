"""Journey: open napari, an image, Plugins > SAM3; the default count, then text, clicks, exemplars, box prompt, hand edit,
every re-filter control, export. Run by test_journeys.py in a fresh process."""

import numpy as np
from driver import Journey, blobs, run
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest


def count_first(j: Journey) -> None:
    """Count tab, Count (the default nucleus network runs torch in the viewer's process), then
    SAM3 loads afterwards in the same process (the triton isolation must still hold)."""
    c = j.count
    j.widget.tabs.setCurrentWidget(c)
    c.count_btn.click()
    j.wait(lambda: c.last is not None, "the default count")
    assert c.last.result.method == "learned" and c.last.result.count > 0, c.last.result.warnings
    assert f"Total: {c.last.result.count} objects" in c.count_label.text()
    j.screenshot("counted_first")
    j.widget.tabs.setCurrentWidget(j.seg)


def text_prompt(j: Journey) -> None:
    """Two concepts + Enter -> one Labels layer with a score per object."""
    seg = j.seg
    seg.threshold_slider.setValue(10)  # the tiny random model scores about 0.25
    seg.concepts_edit.setText("nucleus, cell")
    QTest.keyClick(seg.concepts_edit, Qt.Key.Key_Return)
    j.wait(lambda: "nucleus, cell · cells" in j.viewer.layers, "the text result")
    layer = j.layer("nucleus, cell · cells")
    feats = layer.features
    assert len(feats) > 0 and {"label", "prompt", "score"} <= set(feats.columns), feats.columns
    assert set(feats["prompt"]) <= {"nucleus", "cell"} and (feats["score"] >= 0.1).all()
    assert set(np.unique(layer.data)) - {0} <= set(feats["label"])
    assert j.widget.model_status.text().startswith("Loaded:"), j.widget.model_status.text()
    assert f"objects ({len(seg.last_text.raw)} candidates" in seg.status_label.text()
    assert "nucleus, cell · cells" in seg.driven_label.text()
    j.screenshot("two_concepts")


def clicks(j: Journey) -> None:
    """A click -> 3 candidates -> Sign -> cycle -> commit -> Ctrl+Z."""
    from napari_sam3._napari.prompt_layers import signs_of

    seg = j.seg
    seg.add_prompts_btn.click()
    points = j.layer("cells clicks")
    assert "cells boxes" in j.viewer.layers and j.viewer.layers.selection.active is points
    points.add([24, 30])
    j.wait(lambda: "Candidate" in seg.candidate_label.text(), "3 candidates")
    assert "/3" in seg.candidate_label.text(), seg.candidate_label.text()
    assert j.layer("SAM3 candidate").data.any()
    seg.sign_btn.click()  # the next click is negative; the one just placed stays positive
    assert "negative" in seg.sign_btn.text() and signs_of(points) == ["positive"]
    points.add([88, 8])
    j.wait(lambda: signs_of(points) == ["positive", "negative"] and seg.last_clicks is not None)
    seg.sign_btn.click()
    first = seg.candidate_label.text()
    seg.next_btn.click()
    assert seg.candidate_label.text() != first and "/3" in seg.candidate_label.text()
    seg.commit_btn.click()
    j.wait(lambda: "cells annotations" in j.viewer.layers, "the commit")
    target = j.layer("cells annotations")
    assert set(np.unique(target.data)) == {0, 1}
    assert "Committed as label 1 in 'cells annotations'" in seg.status_label.text()
    assert len(points.data) == 0  # ready for the next object
    j.screenshot("click_committed")
    target.undo()  # Ctrl+Z on the target layer
    assert not target.data.any()
    j.process(0.1)
    assert "was undone" in seg.status_label.text(), seg.status_label.text()  # no stale line


def exemplars(j: Journey) -> None:
    """A positive exemplar box, then a negative one: the negative changes the result."""
    from napari_sam3._napari.prompt_layers import signs_of

    seg = j.seg
    boxes = j.layer("cells boxes")
    seg.concepts_edit.setText("")
    boxes.add_rectangles(np.array([[[14, 20], [14, 40], [34, 40], [34, 20]]], float))
    seg.run_btn.click()
    j.wait(lambda: "exemplars · cells" in j.viewer.layers, "the exemplar result")
    only_positive = j.layer("exemplars · cells").features
    assert len(only_positive) > 0
    seg.sign_btn.click()
    boxes.add_rectangles(np.array([[[70, 2], [70, 22], [92, 22], [92, 2]]], float))
    seg.sign_btn.click()
    assert signs_of(boxes) == ["positive", "negative"]
    seg.run_btn.click()
    j.wait(lambda: "exemplars · cells [1]" in j.viewer.layers, "the second exemplar result")
    both = j.layer("exemplars · cells [1]").features
    assert len(both) != len(only_positive) or not np.allclose(
        both["score"], only_positive["score"]
    ), "the negative box changed nothing"
    assert "exemplars · cells [1]" in seg.driven_label.text()  # Enter again: shown which one
    j.screenshot("exemplars")


def box_prompt(j: Journey) -> None:
    """Boxes as a box prompt: a rectangle -> candidates -> commit."""
    seg = j.seg
    boxes = j.layer("cells boxes")
    seg.box_mode_combo.setCurrentIndex(1)
    seg.candidate_label.setText("")
    boxes.add_rectangles(np.array([[[48, 68], [48, 92], [72, 92], [72, 68]]], float))
    j.wait(lambda: "Candidate" in seg.candidate_label.text(), "the box-prompt candidates")
    seg.commit_btn.click()
    j.wait()
    assert "Committed as label" in seg.status_label.text(), seg.status_label.text()
    assert len(boxes.data) == 0  # the box prompt is used up
    seg.box_mode_combo.setCurrentIndex(0)
    j.screenshot("box_prompt")


def hand_edit_survives_refilter(j: Journey) -> None:
    """Paint into the result, then move every re-filter control: the stroke stays, undo works."""
    seg = j.seg
    layer = seg.last_text.layer
    name = layer.name
    layer.brush_size = 7
    layer.paint((10, 100), 99)  # one brush dab, as a mouse press does
    stroke = np.asarray(layer.data) == 99
    assert stroke.sum() > 10
    moves = [
        lambda: seg.threshold_slider.setValue(35),
        lambda: seg.min_area_spin.setValue(15),
        lambda: seg.refine_combo.setCurrentIndex(seg.refine_combo.count() - 1),
        lambda: seg.hidden_check.setChecked(True),
        lambda: seg.threshold_slider.setValue(10),
        lambda: seg.min_area_spin.setValue(0),
        lambda: seg.refine_combo.setCurrentIndex(0),
    ]
    for i, move in enumerate(moves):
        move()
        j.wait(what="the re-filter")
        assert layer in j.viewer.layers and (np.asarray(layer.data)[stroke] == 99).all()
        if i == 0:
            assert f"Your edits are kept in '{name}'" in seg.status_label.text()
    driven = seg.last_text.layer
    assert driven is not layer and f"'{driven.name}'" in seg.driven_label.text()
    assert f"Kept as you edited them: '{name}'" in seg.driven_label.text(), seg.driven_label.text()
    j.viewer.layers.selection.active = layer
    j.screenshot("edit_kept")
    layer.undo()  # the history was never reset
    assert not (np.asarray(layer.data) == 99).any()
    layer.redo()
    assert (np.asarray(layer.data)[stroke] == 99).all()


def export(j: Journey) -> None:
    """Export the edited layer: labels TIFF + objects CSV (+ COCO, training pair)."""
    import json

    import pandas as pd

    from napari_sam3.io.tiff import read_labels_tiff

    box = j.widget.export_box
    layer = j.viewer.layers.selection.active
    box.coco_check.setChecked(True)
    box.pairs_check.setChecked(True)
    paths = box.export(folder=str(j.out / "export"))
    assert paths is not None, j.notes
    stem = paths["labels_tiff"].name[: -len("_labels.tif")]
    assert np.array_equal(read_labels_tiff(paths["labels_tiff"]).data, np.asarray(layer.data))
    table = pd.read_csv(paths["objects_csv"])
    assert set(table["label"]) == set(np.unique(layer.data)) - {0} and 99 in set(table["label"])
    assert len(json.loads(paths["coco"].read_text())["annotations"]) == len(table)
    assert paths["pair_image"].exists() and paths["pair_mask"].exists()
    assert box.status.text().startswith(f"Exported '{layer.name}'")
    assert stem and not j.errors(), j.errors()
    j.screenshot("exported")


def steps(j: Journey) -> None:
    j.viewer.add_image(blobs(), name="cells")
    j.open_dock()
    j.process(0.6)
    zoom = j.viewer.camera.zoom
    j.viewer.reset_view()
    assert abs(j.viewer.camera.zoom - zoom) < 1e-6 * zoom, "the view was not refitted to the dock"
    j.screenshot("opened")
    for step in (
        count_first,
        text_prompt,
        clicks,
        exemplars,
        box_prompt,
        hand_edit_survives_refilter,
        export,
    ):
        step(j)
        j.lap(step.__name__)


if __name__ == "__main__":
    run(steps)
