"""Per-image completion records: ``<out>/.done/<stem>.json``, the resume contract.

Before writing a plane's outputs the worker writes a *started* record (claiming the files for this
run's settings); after every output is in place it replaces it with a *done* record holding each
output's size and SHA-256. A rerun skips a plane only when the done record matches the settings and
every file still has its recorded size and hash; a started or mismatching record means "ours but
incomplete" and the plane is redone. Files with no record, or a record from other settings, are
somebody else's: they are only replaced with ``--overwrite``.
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
    CONFLICT = "conflict"  # record from a run with other settings


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
    if rec.get("fingerprint") != fingerprint:
        return RecordState.CONFLICT, rec
    if rec.get("status") != "done":
        return RecordState.PARTIAL, rec
    if source is not None and rec.get("source_file") != source:
        return RecordState.PARTIAL, rec
    recorded = rec.get("outputs", {})
    if set(recorded) != set(outputs):
        return RecordState.PARTIAL, rec
    for key, path in outputs.items():
        want = recorded[key]
        if want.get("path") != path.relative_to(out_dir).as_posix():
            return RecordState.PARTIAL, rec
        try:
            if path.stat().st_size != want.get("size") or file_digest(path) != {
                "size": want["size"],
                "sha256": want["sha256"],
            }:
                return RecordState.PARTIAL, rec
        except OSError:
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
