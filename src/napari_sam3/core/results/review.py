"""Object review decisions: the ``status`` column of an objects table, and the rules around it.

One row per object (a result layer's ``features``, a `Candidates.table`, a tracking table), a
``label`` column (the object's id in the label image) and here a ``status``: one of `STATUSES`.

- `with_status`: the table with a ``status`` column (missing -> "unreviewed"; bad values refused).
- `set_status`, `accept_above`: decisions, returning a new table.
- `next_to_review`: the label to look at next (unreviewed, then "needs edit"), by score.
- `carry_decisions`: a re-filtered table (new threshold, refinement, min area: the ids are
  renumbered) gets the decisions of the same objects in the old one.
- `drop_rejected`: the label image and table without the rejected objects; every export
  (TIFF, COCO, pairs, CSV) must go through it (rejected objects never leave the program).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from napari_sam3.core.errors import Sam3Error

STATUS_COLUMN = "status"
UNREVIEWED, ACCEPTED, REJECTED, NEEDS_EDIT = "unreviewed", "accepted", "rejected", "needs edit"
STATUSES = (UNREVIEWED, ACCEPTED, REJECTED, NEEDS_EDIT)
SCORE_TOLERANCE = 1e-6  # scores of the same candidate before and after re-filtering are equal


def check_status(status: str) -> str:
    """``status`` normalised (case, spaces, "needs_edit"), or `Sam3Error` naming the choices."""
    value = str(status).strip().lower().replace("_", " ")
    if value not in STATUSES:
        raise Sam3Error(f"Unknown review status {status!r}; use one of {', '.join(STATUSES)}.")
    return value


def with_status(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a valid ``status`` column (a copy; missing -> "unreviewed")."""
    out = table.copy()
    if STATUS_COLUMN not in out:
        out[STATUS_COLUMN] = UNREVIEWED
    else:
        out[STATUS_COLUMN] = [
            UNREVIEWED if v is None or (isinstance(v, float) and np.isnan(v)) else check_status(v)
            for v in out[STATUS_COLUMN]
        ]
    out[STATUS_COLUMN] = out[STATUS_COLUMN].astype(object)
    return out


def _label_rows(table: pd.DataFrame, labels: Iterable[int] | int) -> np.ndarray:
    wanted = np.atleast_1d(np.asarray(labels, dtype=np.int64))
    rows = table["label"].isin(wanted).to_numpy()
    missing = set(wanted.tolist()) - set(table.loc[rows, "label"].astype(int).tolist())
    if missing:
        raise Sam3Error(f"No object with label {sorted(missing)[0]} in this result.")
    return rows


def set_status(table: pd.DataFrame, labels: Iterable[int] | int, status: str) -> pd.DataFrame:
    """A new table where the objects ``labels`` have ``status``."""
    out = with_status(table)
    out.loc[_label_rows(out, labels), STATUS_COLUMN] = check_status(status)
    return out


def accept_above(table: pd.DataFrame, min_score: float, *, overrule: bool = False) -> pd.DataFrame:
    """Accept every object scoring at least ``min_score``.

    Only unreviewed objects change unless ``overrule``: a person's reject or "needs edit" stands.
    """
    out = with_status(table)
    if "score" not in out:
        raise Sam3Error("This result has no scores to accept by; accept the objects one by one.")
    rows = out["score"].to_numpy(dtype=float) >= float(min_score)
    if not overrule:
        rows &= (out[STATUS_COLUMN] == UNREVIEWED).to_numpy()
    out.loc[rows, STATUS_COLUMN] = ACCEPTED
    return out


def next_to_review(
    table: pd.DataFrame,
    current: int | None = None,
    statuses: Iterable[str] = (UNREVIEWED, NEEDS_EDIT),
) -> int | None:
    """The label after ``current`` (best score first, wrapping round) still to review; None when done.

    Unreviewed objects come before those marked "needs edit".
    """
    out = with_status(table)
    order = out.sort_values("score", ascending=False, kind="stable") if "score" in out else out
    for status in [check_status(s) for s in statuses]:
        labels = order.loc[order[STATUS_COLUMN] == status, "label"].astype(int).tolist()
        if not labels:
            continue
        all_labels = order["label"].astype(int).tolist()
        if current is None or current not in all_labels:
            return labels[0]
        position = all_labels.index(current)
        after = [x for x in labels if all_labels.index(x) > position]
        candidates = after or [x for x in labels if x != current] or labels
        return candidates[0]
    return None


def carry_decisions(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` with the statuses of the same objects in ``old`` (others: "unreviewed").

    Re-filtering keeps each candidate's prompt and score but renumbers the labels and may change
    masks: an object is matched by prompt and score, ties broken by the nearest centroid.
    """
    out = with_status(new)
    if STATUS_COLUMN not in old or not len(old) or not len(out):
        return out
    before = with_status(old)
    decided = before[before[STATUS_COLUMN] != UNREVIEWED]
    if not len(decided):
        return out
    used: set[int] = set()
    statuses = out[STATUS_COLUMN].to_numpy(dtype=object).copy()
    for i, row in enumerate(out.itertuples(index=False)):
        match = _match(decided, row, used)
        if match is not None:
            used.add(match)
            statuses[i] = decided.loc[match, STATUS_COLUMN]
    out[STATUS_COLUMN] = statuses
    return out


def _match(decided: pd.DataFrame, row, used: set[int]):
    same = np.ones(len(decided), bool)
    if "prompt" in decided and hasattr(row, "prompt"):
        same &= (decided["prompt"].astype(str) == str(row.prompt)).to_numpy()
    score = getattr(row, "score", np.nan)
    if "score" in decided and np.isfinite(score):
        same &= np.abs(decided["score"].to_numpy(float) - float(score)) <= SCORE_TOLERANCE
    elif "centroid_y" in decided:  # no scores (classical counts): the same place
        dy = decided["centroid_y"].to_numpy(float) - float(row.centroid_y)
        dx = decided["centroid_x"].to_numpy(float) - float(row.centroid_x)
        same &= np.hypot(dy, dx) <= 2.0
    index = [k for k, ok in zip(decided.index, same, strict=True) if ok and k not in used]
    if not index:
        return None
    if len(index) > 1 and "centroid_y" in decided and hasattr(row, "centroid_y"):
        near = decided.loc[index]
        dist = np.hypot(
            near["centroid_y"].to_numpy(float) - float(row.centroid_y),
            near["centroid_x"].to_numpy(float) - float(row.centroid_x),
        )
        return index[int(np.argmin(dist))]
    return index[0]


def rejected_labels(table: pd.DataFrame) -> np.ndarray:
    """The labels marked rejected (none when the table has no ``status`` column)."""
    if STATUS_COLUMN not in table or not len(table):
        return np.zeros(0, np.int64)
    rows = with_status(table)[STATUS_COLUMN] == REJECTED
    return table.loc[rows.to_numpy(), "label"].to_numpy(dtype=np.int64)


def drop_rejected(labels: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The label image (any shape) and table without the rejected objects.

    Returns the inputs themselves when nothing is rejected; otherwise a new label image (rejected
    pixels set to 0, other ids unchanged) and the table without their rows.
    """
    gone = rejected_labels(table)
    if not gone.size:
        return labels, table
    arr = np.asarray(labels)
    out = arr.copy()
    out[np.isin(arr, gone)] = 0
    kept = table[~table["label"].isin(gone)].reset_index(drop=True)
    return out, kept


__all__ = [
    "ACCEPTED",
    "NEEDS_EDIT",
    "REJECTED",
    "STATUSES",
    "STATUS_COLUMN",
    "UNREVIEWED",
    "accept_above",
    "carry_decisions",
    "check_status",
    "drop_rejected",
    "next_to_review",
    "rejected_labels",
    "set_status",
    "with_status",
]
