"""Object review: status rules (core.results.review) and the Qt-free layer session (_napari.review_session)."""

import numpy as np
import pandas as pd
import pytest

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates, boxes_from_masks
from napari_sam3.core.results.review import (
    STATUS_COLUMN,
    accept_above,
    carry_decisions,
    drop_rejected,
    next_to_review,
    set_status,
    with_status,
)


def _candidates():
    masks = np.zeros((4, 30, 40), bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 12:20, 2:12] = True
    masks[2, 2:12, 20:30] = True
    masks[3, 20:28, 25:38] = True
    scores = np.array([0.9, 0.75, 0.5, 0.2], np.float32)
    return Candidates(masks, scores, boxes_from_masks(masks), ["cell"] * 4, "text")


@pytest.fixture
def table():
    cands = _candidates()
    return cands.table(first_id=1, label_image=cands.to_label_image(first_id=1))


def test_status_column_and_decisions(table):
    t = with_status(table)
    assert set(t[STATUS_COLUMN]) == {"unreviewed"}
    assert STATUS_COLUMN not in table  # a copy
    t = set_status(t, [2, 3], "Needs_Edit")
    assert t.set_index("label").loc[[2, 3], STATUS_COLUMN].tolist() == ["needs edit"] * 2
    with pytest.raises(Sam3Error, match="one of unreviewed"):
        set_status(t, 1, "maybe")
    with pytest.raises(Sam3Error, match="label 9"):
        set_status(t, 9, "accepted")


def test_accept_above_keeps_a_persons_decisions(table):
    t = set_status(table, 1, "rejected")
    t = accept_above(t, 0.7).set_index("label")[STATUS_COLUMN]
    assert t.to_dict() == {1: "rejected", 2: "accepted", 3: "unreviewed", 4: "unreviewed"}
    again = accept_above(set_status(table, 1, "rejected"), 0.7, overrule=True)
    assert (again.set_index("label").loc[[1, 2], STATUS_COLUMN] == "accepted").all()


def test_next_goes_by_score_unreviewed_first_and_wraps(table):
    t = set_status(table, 1, "needs edit")
    assert next_to_review(t) == 2
    assert next_to_review(t, 2) == 3
    assert next_to_review(t, 4) == 2  # wraps round
    t = set_status(t, [2, 3, 4], "accepted")
    assert next_to_review(t, 4) == 1  # then the ones that need an edit
    assert next_to_review(set_status(t, 1, "accepted")) is None


def test_decisions_survive_refiltering():
    """A stricter threshold drops and renumbers objects; the survivors keep their decisions."""
    cands = _candidates()
    old = cands.table(first_id=1, label_image=cands.to_label_image(first_id=1))
    old = set_status(set_status(old, 2, "rejected"), 3, "accepted")
    # re-filter: drop the best object (say a min-area change), ids shift down by one
    kept = cands.subset([1, 2, 3])
    new = kept.table(first_id=1, label_image=kept.to_label_image(first_id=1))
    carried = carry_decisions(old, new).set_index("label")[STATUS_COLUMN]
    assert carried.to_dict() == {1: "rejected", 2: "accepted", 3: "unreviewed"}


def test_drop_rejected_from_labels_and_table(table):
    labels = _candidates().to_label_image(first_id=1)
    same_labels, same_table = drop_rejected(labels, table)  # no status column: unchanged
    assert same_labels is labels and same_table is table
    t = set_status(table, [1, 3], "rejected")
    out, kept = drop_rejected(labels[None], t)  # any shape (here a 1-slice stack)
    assert set(np.unique(out)) == {0, 2, 4}
    assert kept["label"].tolist() == [2, 4]
    assert np.array_equal(out[0] == 2, labels == 2)  # other ids untouched
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}  # input not modified


# ------------------------------------------------------------------ the napari layer session
@pytest.fixture
def layer():
    from napari.layers import Labels

    cands = _candidates()
    data = cands.to_label_image(first_id=1)
    table = cands.table(first_id=1, label_image=data)
    table.insert(0, "index", table["label"].to_numpy())
    return Labels(data, features=table)


def test_session_decides_advances_and_hides(layer):
    from napari_sam3._napari.review_session import ReviewSession

    review = ReviewSession(layer)
    changes = []
    review.listeners.append(lambda: changes.append(1))
    layer.selected_label = 1
    assert review.accept() == 2 and layer.selected_label == 2  # decided, then the next one
    review.reject()
    assert review.status_of(1) == "accepted" and review.status_of(2) == "rejected"
    assert review.accept_above(0.4) == 1  # label 3; the rejected one stays rejected
    assert review.counts() == {"accepted": 2, "rejected": 1, "unreviewed": 1}
    assert len(changes) == 3
    assert review.table()[STATUS_COLUMN].tolist() == [
        "accepted",
        "rejected",
        "accepted",
        "unreviewed",
    ]
    visible_before = layer.colormap.map(np.array([1, 2]))
    review.hide_rejected(True)
    assert layer.colormap.map(np.array([2]))[0][3] == 0  # transparent
    np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0], visible_before[0])
    review.hide_rejected(False)
    np.testing.assert_allclose(layer.colormap.map(np.array([1, 2])), visible_before)
    data, kept = review.export_arrays()
    assert 2 not in np.unique(data) and 2 not in kept["label"].tolist()
    assert 2 not in np.unique(layer.data)  # rejected pixels leave the layer (any writer is right)


def test_session_keys_and_carry_over(layer):
    from napari_sam3._napari.review_session import ReviewSession, carry_over

    review = ReviewSession(layer)
    review.bind_keys()
    layer.selected_label = 3
    from napari.utils.key_bindings import coerce_keybinding

    layer.keymap[coerce_keybinding("r")](layer)  # what pressing R on the selected layer runs
    assert review.status_of(3) == "rejected" and layer.selected_label == 4
    layer.keymap[coerce_keybinding("n")](layer)
    assert layer.selected_label == 1
    old = layer.features.copy()
    layer.features = pd.DataFrame(layer.features.drop(columns=[STATUS_COLUMN]))
    carry_over(layer, old)
    assert review.status_of(3) == "rejected"


def test_napari_writer_leaves_rejected_objects_out(table, tmp_path):
    import tifffile

    from napari_sam3._writer import write_labels

    labels = _candidates().to_label_image(first_id=1)
    t = set_status(table, 2, "rejected")
    written = write_labels(str(tmp_path / "out.tif"), labels, {"features": t, "name": "r"})
    saved = tifffile.imread(written[0])
    assert set(np.unique(saved)) == {0, 1, 3, 4}
    assert pd.read_csv(written[1])["label"].tolist() == [1, 3, 4]
