"""Per-image completion records: ``<out>/.done/<stem>.json``, the resume contract.

Before writing a plane's outputs the worker writes a *started* record (claiming the files for this
run's settings); after every output is in place it replaces it with a *done* record holding each
output's size and SHA-256. A rerun skips a plane only when the done record matches the settings and
every file still has its recorded size and hash. A *started* record (any settings) means "ours but
incomplete": the plane is redone. A done record whose files are missing or whose input changed
is redone too. Files that are there but differ from their done record were changed by someone
(a hand-edited ``<stem>_labels.tif``): never replaced without ``--overwrite``; nor are files with
no record, or with a done record from other settings.
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path

from napari_sam3.io.atomic import file_digest, write_json
from napari_sam3.io.manifest import now_iso

DONE_DIR = ".done"


class RecordState(enum.Enum):
    NEW = "new"  # nothing there yet
    COMPLETE = "complete"  # done record matches settings and files: skip
    PARTIAL = "partial"  # our record, outputs missing or changed: redo
    FOREIGN = "foreign"  # output files exist without a record of ours
    CONFLICT = "conflict"  # done record from a run with other settings
    MODIFIED = "modified"  # done record, but a file changed since (edited by hand?)


def record_path(out_dir: str | os.PathLike, stem: str) -> Path:
    return Path(out_dir) / DONE_DIR / f"{stem}.json"


def read_record(out_dir: str | os.PathLike, stem: str) -> dict | None:
    path = record_path(out_dir, stem)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def source_signature(path: str | os.PathLike) -> dict:
    """Size and modification time of an input file: a changed input is redone."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_record(
    out_dir: str | os.PathLike,
    stem: str,
    fingerprint: str,
    outputs: dict[str, Path],
    source: dict | None = None,
) -> tuple[RecordState, dict | None]:
    """Classify a plane's outputs; returns (state, record).

    ``source`` (from `source_signature`): when given and different from the record's, the input
    file changed since: the plane is redone.
    """
    out_dir = Path(out_dir)
    rec = read_record(out_dir, stem)
    if rec is None:
        if record_path(out_dir, stem).exists():  # unreadable record: ours, broken
            return RecordState.PARTIAL, None
        if any(p.exists() for p in outputs.values()):
            return RecordState.FOREIGN, None
        return RecordState.NEW, None
    if rec.get("status") != "done":
        return RecordState.PARTIAL, rec
    recorded = rec.get("outputs", {})
    for key, path in outputs.items():  # a file that is there but not as written: someone's edit
        want = recorded.get(key)
        if want is None or want.get("path") != path.relative_to(out_dir).as_posix():
            continue
        try:
            if path.exists() and (
                path.stat().st_size != want.get("size")
                or file_digest(path) != {"size": want.get("size"), "sha256": want.get("sha256")}
            ):
                return RecordState.MODIFIED, rec
        except OSError:
            return RecordState.PARTIAL, rec
    if any(p.exists() for k, p in outputs.items() if k not in recorded):
        return RecordState.FOREIGN, rec  # e.g. a png the record does not list: not ours
    if rec.get("fingerprint") != fingerprint:
        return RecordState.CONFLICT, rec
    if source is not None and rec.get("source_file") != source:
        return RecordState.PARTIAL, rec
    if set(recorded) != set(outputs) or not all(p.exists() for p in outputs.values()):
        return RecordState.PARTIAL, rec
    return RecordState.COMPLETE, rec


def write_started(out_dir: str | os.PathLike, stem: str, fingerprint: str, info: dict) -> None:
    write_json(
        record_path(out_dir, stem),
        {
            "status": "started",
            "stem": stem,
            "fingerprint": fingerprint,
            "started": now_iso(),
            **info,
        },
        overwrite=True,
    )


def write_done(
    out_dir: str | os.PathLike, stem: str, fingerprint: str, outputs: dict[str, Path], info: dict
) -> dict:
    out_dir = Path(out_dir)
    rec = {
        "status": "done",
        "stem": stem,
        "fingerprint": fingerprint,
        "finished": now_iso(),
        **info,
        "outputs": {
            k: {"path": p.relative_to(out_dir).as_posix(), **file_digest(p)}
            for k, p in outputs.items()
        },
    }
    write_json(record_path(out_dir, stem), rec, overwrite=True)
    return rec
