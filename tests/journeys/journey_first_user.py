"""Journey: the README's first-user path. napari with the sample, Plugins > SAM3, Count, Segment,
a click committed into the result, review (reject one), File > Save (napari's builtin writer),
Export; no stale status line, no fake score on the hand-made object."""

import numpy as np
import pandas as pd
from driver import Journey, run


def steps(j: Journey) -> None:
    from napari_builtins.io import napari_write_labels

    from napari_sam3._qt.review_panel import open_review_panel
    from napari_sam3.core.results.columns import HAND_PROMPT
    from napari_sam3.io.tiff import read_labels_tiff

    j.viewer.open_sample("napari-sam3", "nuclei")
    j.open_dock()
    image = j.layer("nuclei (synthetic)")
    j.widget.tabs.setCurrentWidget(j.count)
    j.count.count_btn.click()
    j.wait(lambda: j.count.last is not None, "the count")
    assert j.count.last.count > 0 and "Total:" in j.count.count_label.text()
    j.lap("count")
    seg = j.seg
    j.widget.tabs.setCurrentWidget(seg)
    seg.images.image_combo.setCurrentText(image.name)
    seg.threshold_slider.setValue(5)  # the tiny random model scores low
    seg.concepts_edit.setText("nucleus")
    seg.run_btn.click()
    j.wait(lambda: seg.last_text is not None, "the text result")
    result = seg.last_text.layer
    assert len(result.features) >= 2, "the tiny model found fewer than two objects"
    j.lap("segment")
    seg.add_prompts_btn.click()
    assert "SAM3 candidate" not in [
        seg.target_combo.itemText(i) for i in range(seg.target_combo.count())
    ]
    seg.target_combo.setCurrentText(result.name)
    j.layer(f"{image.name} clicks").add([100, 100])
    j.wait(lambda: seg.last_clicks is not None, "3 candidates")
    before = set(result.features["label"])
    seg.commit_btn.click()
    j.wait(lambda: "Committed as label" in seg.status_label.text(), "the commit")
    new_id = int(seg.status_label.text().split("label ")[1].split()[0])
    assert new_id not in before, (new_id, before)
    row = result.features[result.features["label"] == new_id].iloc[0]
    assert row["prompt"] == HAND_PROMPT and np.isnan(row["score"]), row
    seg.review_btn.click()
    panel = open_review_panel(j.viewer)
    j.viewer.layers.selection.active = result
    j.process(0.2)
    rejected = int(result.features.sort_values("score")["label"].iloc[0])
    result.selected_label = rejected
    panel.buttons["reject"].click()
    j.process(0.2)
    saved = napari_write_labels(str(j.out / "file_save.tif"), *result.as_layer_data_tuple()[:2])
    assert rejected not in np.unique(read_labels_tiff(saved).data)
    paths = j.widget.export_box.export(folder=str(j.out / "export"))
    assert paths is not None, j.notes
    table = pd.read_csv(paths["objects_csv"], dtype={"prompt": str})
    assert rejected not in table["label"].tolist()
    mine = table[table["label"] == new_id].iloc[0]
    assert mine["prompt"] == HAND_PROMPT and np.isnan(mine["score"]), mine
    j.lap("commit, review, save, export")
    print("STATUS segment:", seg.status_label.text())
    print("STATUS count:", j.count.status_label.text())
    print("MODEL:", j.widget.model_status.text())
    print("EXPORT:", j.widget.export_box.status.text())
    j.screenshot("first_user")


if __name__ == "__main__":
    run(steps)
