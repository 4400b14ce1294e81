"""Journey: Segment, fix the result by hand, Adapt SAM3 to these results (the verdict on held-out
objects is shown; a model that is not better is not used), then an adapter file chosen in the
Model section changes the next Segment and Count runs. Run by test_journey_adapt.py."""

import os

import numpy as np
from driver import Journey, run


def steps(j: Journey) -> None:
    from napari_sam3.core.synthetic import synthetic_nuclei

    img, truth = synthetic_nuclei((224, 224), n=4, seed=0, diameter=60.0, touching=0)
    j.viewer.add_image(img, name="cells")
    j.open_dock()
    seg = j.seg
    seg.threshold_slider.setValue(10)  # the tiny random model scores about 0.25
    seg.concepts_edit.setText("nucleus")
    seg.run_btn.click()
    j.wait(lambda: "nucleus · cells" in j.viewer.layers, "the text result")
    layer = j.layer("nucleus · cells")
    base_scores = np.sort(layer.features["score"].to_numpy())
    layer.data = truth.astype(layer.data.dtype)  # the person fixes the masks by hand
    j.lap("segment")

    seg.adapt_btn.click()
    # the default 150 steps take 1-2 s each on a busy 2-core CPU: more than one wait's 120 s
    j.wait(lambda: getattr(seg, "last_adapt", None) is not None, "the adaptation", timeout=330)
    adapted = seg.last_adapt
    shown = seg.status_label.text()
    assert "held-out F1" in shown and shown == adapted.message, shown
    # the random tiny model cannot learn one image's nuclei well enough: the base model stays
    assert adapted.selected == (j.widget.holder.adapter is adapted.adapter)
    if not adapted.selected:
        assert "keeping the base model" in shown
    j.screenshot("adapted")
    j.lap("adapt")

    # an adapter file (napari-sam3 adapt --out FILE) chosen in the Model section
    c = j.count
    j.widget.tabs.setCurrentWidget(c)
    c.method_combo.setCurrentText("sam3")
    c.concepts_edit.setText("nucleus")
    c.count_btn.click()
    j.wait(lambda: c.last is not None and c.last.result.method == "sam3", "the SAM3 count")
    plain = c.last.result
    j.widget.adapter_edit.setText(os.environ["JOURNEY_ADAPTER"])
    j.widget.adapter_edit.editingFinished.emit()
    c.count_btn.click()
    j.wait(lambda: c.last.result is not plain, "the SAM3 count with the adapter")
    engine = j.widget.holder.engine
    assert (
        engine.adapter is not None and engine.adapter.meta["file"] == os.environ["JOURNEY_ADAPTER"]
    )
    assert not np.array_equal(c.last.result.labels, plain.labels)
    j.widget.tabs.setCurrentWidget(seg)
    seg.run_btn.click()
    j.wait(lambda: "nucleus · cells" in j.viewer.layers and seg.last_text.layer is not layer)
    scores = np.sort(seg.last_text.layer.features["score"].to_numpy())
    assert scores.shape != base_scores.shape or not np.allclose(scores, base_scores)
    assert not [e for e in j.errors() if "rror" in e], j.errors()
    j.screenshot("with_adapter")


if __name__ == "__main__":
    run(steps)
