"""Journey: a z/t stack; Track through slices, Count (the default nucleus network, classical, then SAM3 without and with exemplar
boxes), the measurements table and its CSV. Run by test_journeys.py in a fresh process with the
video-capable tiny checkpoint (make_tiny_checkpoint(folder, video=True))."""

import numpy as np
import pandas as pd
from driver import Journey, blobs, run
from qtpy.QtCore import Qt

FRAMES = 2


def movie() -> np.ndarray:
    return np.stack(
        [
            blobs((80, 96), ((20 + 2 * t, 24), (52, 66 - 2 * t), (40, 40)), seed=t)
            for t in range(FRAMES)
        ]
    )


def track(j: Journey) -> None:
    seg = j.seg
    seg.threshold_slider.setValue(10)
    seg.concepts_edit.setText("cell")
    assert seg.track_btn.isEnabled()
    seg.track_btn.click()
    j.wait(lambda: "SAM3 track: cell" in j.viewer.layers, "tracking")
    layer = j.layer("SAM3 track: cell")
    assert layer.data.shape == (FRAMES, 80, 96)
    assert seg.status_label.text().startswith("Tracked "), seg.status_label.text()
    assert f"through {FRAMES} slices" in seg.status_label.text()
    ids = set(np.unique(layer.data)) - {0}
    assert ids and ids <= set(layer.features["label"])
    j.screenshot("tracked")


def table_shows_every_column(j: Journey, frame: pd.DataFrame) -> None:
    view = j.count.table_view
    model = view.model()
    assert model.rowCount() == len(frame) and not view.verticalHeader().isVisible()
    header = view.horizontalHeader()
    metrics = header.fontMetrics()
    for col in range(model.columnCount()):
        text = str(model.headerData(col, Qt.Orientation.Horizontal))
        assert header.sectionSize(col) >= metrics.horizontalAdvance(text), text


def count(j: Journey) -> None:
    from napari_sam3._napari.prompt_layers import signs_of

    c = j.count
    j.widget.tabs.setCurrentWidget(c)
    assert c.method_combo.currentText() == "learned"  # what a person gets by pressing Count
    c.count_btn.click()
    j.wait(lambda: c.last is not None, "the default (nucleus network) count")
    first = c.last.result
    assert first.method == "learned" and first.count > 0, (first.count, first.warnings)
    assert f"Total: {first.count} objects" in c.count_label.text()
    assert any("count (learned)" in n for n in j.layer_names())
    j.screenshot("count_learned")

    c.method_combo.setCurrentText("classical")
    c.count_btn.click()
    j.wait(lambda: c.last.result.method == "classical", "the classical count")
    result = c.last.result
    assert result.count > 0 and f"Total: {result.count} objects" in c.count_label.text()
    names = j.layer_names()
    assert any("count (classical)" in n for n in names), names
    assert any(n.endswith("centroids") for n in names), names
    table_shows_every_column(j, result.table)
    j.screenshot("count_classical")
    csv = c.export_csv(str(j.out / "counts.csv"))
    assert len(pd.read_csv(csv)) == result.count

    c.method_combo.setCurrentText("sam3")
    c.concepts_edit.setText("cell")
    c.count_btn.click()
    j.wait(lambda: c.last.result.method == "sam3", "the SAM3 count")
    plain = c.last.result
    assert "cell" in c.count_label.text() and f"Total: {plain.count}" in c.count_label.text()
    assert "Exemplar boxes" not in c.count_label.text()

    j.widget.tabs.setCurrentWidget(j.seg)
    j.seg.add_prompts_btn.click()
    boxes = j.layer("movie boxes")
    z = j.viewer.dims.current_step[0]  # the slice in view: exemplars come from it
    boxes.add_rectangles(np.array([[[z, 10, 14], [z, 10, 34], [z, 30, 34], [z, 30, 14]]], float))
    assert signs_of(boxes) == ["positive"]
    j.widget.tabs.setCurrentWidget(c)
    c.exemplar_check.setChecked(True)
    before = dict(j.widget.holder.engine.stats)
    c.count_btn.click()
    j.wait(lambda: c.last.result is not plain, "the SAM3 count with exemplars")
    assert "Exemplar boxes: 1 positive, 0 negative" in c.count_label.text(), c.count_label.text()
    assert j.widget.holder.engine.stats["detector_calls"] > before["detector_calls"]
    assert not [e for e in j.errors() if "rror" in e], j.errors()
    j.screenshot("count_sam3_exemplars")


def steps(j: Journey) -> None:
    j.viewer.add_image(movie(), name="movie")
    j.open_dock()
    j.widget.segment_tab.refresh_layer_choices()
    for step in (track, count):
        step(j)
        j.lap(step.__name__)


if __name__ == "__main__":
    run(steps)
