"""Journey: count the nuclei sample, correct the count by hand (paint a missed nucleus, erase a
wrong one), Train on these labels (a few steps), count again with the new network. Run by
test_journeys.py in a fresh process (napari first, the dock through the Plugins route)."""

import numpy as np
from driver import Journey, run

STEPS = 4  # a journey checks the route, not the accuracy (tests/test_finetune.py does)


def count_sample(j: Journey) -> None:
    c = j.count
    j.widget.tabs.setCurrentWidget(c)
    c.refresh_layer_choices()
    assert c.method_combo.currentText() == "learned"
    c.count_btn.click()
    j.wait(lambda: c.last is not None, "the first count")
    assert c.last.result.count > 10, c.last.result.count
    j.screenshot("counted")


def correct_by_hand(j: Journey) -> None:
    c = j.count
    labels = c.last.labels_layer
    data = np.asarray(labels.data).copy()
    gone = int(np.unique(data[data > 0])[0])
    data[data == gone] = 0  # erase one object
    new = int(data.max()) + 1
    yy, xx = np.mgrid[: data.shape[-2], : data.shape[-1]]
    empty = np.argwhere(data == 0)
    cy, cx = empty[len(empty) // 2]
    data[((yy - cy) ** 2 + (xx - cx) ** 2 < 36) & (data == 0)] = new  # paint one object
    labels.data = data
    j.viewer.layers.selection = {labels}  # what a person does: select the corrected layer
    j.process(0.2)
    assert gone not in labels.data and new in labels.data
    j.screenshot("corrected")


def train(j: Journey) -> None:
    c = j.count
    out = j.out / "my_nuclei.safetensors"
    assert c.train_btn.isEnabled()
    c.train_steps_spin.setValue(STEPS)  # what a person does: fewer steps in the Count tab
    job = c.train_on_labels(path=str(out))
    assert job is not None, j.notes
    j.wait(lambda: c.train_session.last is not None, "training")
    text = c.train_label.text()
    assert "held-out objects:" in text and "->" in text, text
    assert out.is_file()
    i = c.method_combo.findData(str(out))
    assert i >= 0 and c.method_combo.itemText(i) == "learned: my_nuclei"
    if c.train_session.last.better:
        assert c.method_combo.currentIndex() == i
    else:  # worse: said so, and the base stays selected
        assert "NOT better" in text and c.method_combo.currentText() == "learned"
        c.method_combo.setCurrentIndex(i)  # a person can still choose it
    j.screenshot("trained")


def count_again(j: Journey) -> None:
    c = j.count
    first = c.last
    c.count_btn.click()
    j.wait(lambda: c.last is not first, "the count with the new network")
    result = c.last.result
    assert result.meta.get("network", "").endswith("my_nuclei.safetensors"), result.meta
    assert f"Total: {result.count} objects" in c.count_label.text()
    assert not [e for e in j.errors() if "rror" in e], j.errors()
    j.screenshot("counted_with_new_network")


def steps(j: Journey) -> None:
    j.viewer.open_sample("napari-sam3", "nuclei")
    j.open_dock()
    for step in (count_sample, correct_by_hand, train, count_again):
        step(j)
        j.lap(step.__name__)


if __name__ == "__main__":
    run(steps)
