"""Per-image completion records: ``<out>/.done/<stem>.json``, the resume contract.

Before writing a plane's outputs the worker writes a *started* record (claiming the files for this
run's settings); after every output is in place it replaces it with a *done* record holding each
output's size and SHA-256. A rerun skips a plane only when the done record matches the settings and
every file still has its recorded size and hash. A *started* record (any settings) means "ours but
incomplete": the plane is redone. A done record whose files are missing or whose input changed
is redone too. Files that are there but differ from their done record were changed by someone
(a hand-edited ``<stem>_labels.tif``): never replaced without ``--overwrite``; nor are files with
no record, or with a done record from other settings.

A record names its source: the resolved path, size, modification time and SHA-256 of the input
file. Output names belong to a source for good (`claimed_bases`): a later run, a subset rerun or a
run from another folder never hands a name to a different file (`batch.runner.plan_jobs`), and a
record of another source is never taken as "complete" for this one (`RecordState.OTHER_SOURCE`).
"""

from __future__ import annotations

import enum
import functools
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
    OTHER_SOURCE = "other_source"  # the record belongs to another input file of the same name


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
    """Size, modification time and SHA-256 of an input file: a changed input is redone, and a
    record is matched to its own file (not another one of the same name)."""
    st = Path(path).stat()
    sha = _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hashed once per file version (a stack's planes share it); reading is cheap next to a model."""
    return file_digest(path)["sha256"]


def same_source(recorded: dict | None, current: dict | None) -> bool:
    """Whether a recorded source signature is the current file: by SHA-256 when both have one
    (records from before it had size and mtime only)."""
    if not isinstance(recorded, dict) or not isinstance(current, dict):
        return False
    if recorded.get("sha256") and current.get("sha256"):
        return recorded["sha256"] == current["sha256"] and recorded.get("size") == current["size"]
    return recorded.get("size") == current.get("size") and recorded.get("mtime_ns") == current.get(
        "mtime_ns"
    )


def _same_path(a, b) -> bool:
    return bool(a) and bool(b) and os.path.realpath(str(a)) == os.path.realpath(str(b))


def claimed_bases(out_dir: str | os.PathLike) -> list[dict]:
    """Who owns which output name in ``out_dir``: one ``{"base", "source", "source_file"}`` per
    completion record (done or started) that names its source."""
    claims = []
    folder = Path(out_dir) / DONE_DIR
    if not folder.is_dir():
        return claims
    for path in sorted(folder.glob("*.json")):
        rec = read_record(out_dir, path.stem)
        if not rec or not rec.get("source"):
            continue
        base = rec.get("base") or _legacy_base(str(rec.get("stem") or path.stem), rec["source"])
        if base:
            claims.append(
                {"base": base, "source": rec["source"], "source_file": rec.get("source_file")}
            )
    return claims


def _legacy_base(stem: str, source: str) -> str | None:
    """The output base of a record written before records named it: the file stem or
    ``<parent>_<stem>`` (the two names a run gives), whichever the record's name starts with."""
    from napari_sam3.io.readers import file_base

    b = file_base(source)
    for cand in (f"{Path(source).parent.name}_{b}", b):
        if stem == cand or stem.startswith(cand + "_"):
            return cand
    return None


def check_record(
    out_dir: str | os.PathLike,
    stem: str,
    fingerprint: str,
    outputs: dict[str, Path],
    source: dict | None = None,
    source_path: str | os.PathLike | None = None,
) -> tuple[RecordState, dict | None]:
    """Classify a plane's outputs; returns (state, record).

    ``source`` (from `source_signature`): when given and different from the record's, the input
    file changed since: the plane is redone. ``source_path``: a record of another file (another
    path with other contents) is `RecordState.OTHER_SOURCE`, never complete nor redone.
    """
    out_dir = Path(out_dir)
    rec = read_record(out_dir, stem)
    if rec is None:
        if record_path(out_dir, stem).exists():  # unreadable record: ours, broken
            return RecordState.PARTIAL, None
        if any(p.exists() for p in outputs.values()):
            return RecordState.FOREIGN, None
        return RecordState.NEW, None
    if (
        source_path is not None
        and rec.get("source")
        and not _same_path(rec["source"], source_path)
        and not same_source(rec.get("source_file"), source)
    ):
        return RecordState.OTHER_SOURCE, rec
    if rec.get("status") != "done":
        return RecordState.PARTIAL, rec
    recorded = rec.get("outputs", {})
    try:  # a file that is there but not as written: someone's edit
        if changed_outputs(out_dir, rec, outputs, first=True):
            return RecordState.MODIFIED, rec
    except OSError:
        return RecordState.PARTIAL, rec
    if any(p.exists() for k, p in outputs.items() if k not in recorded):
        return RecordState.FOREIGN, rec  # e.g. a png the record does not list: not ours
    if rec.get("fingerprint") != fingerprint:
        return RecordState.CONFLICT, rec
    if source is not None and not same_source(rec.get("source_file"), source):
        return RecordState.PARTIAL, rec
    if set(recorded) != set(outputs) or not all(p.exists() for p in outputs.values()):
        return RecordState.PARTIAL, rec
    return RecordState.COMPLETE, rec


def changed_outputs(
    out_dir: str | os.PathLike, rec: dict, outputs: dict[str, Path], first: bool = False
) -> list[Path]:
    """The outputs that are there but differ from the done record (the hand-edited ones);
    ``first``: stop at the first one."""
    out_dir, changed = Path(out_dir), []
    recorded = rec.get("outputs", {})
    for key, path in outputs.items():
        want = recorded.get(key)
        if want is None or want.get("path") != path.relative_to(out_dir).as_posix():
            continue
        if path.exists() and (
            path.stat().st_size != want.get("size")
            or file_digest(path) != {"size": want.get("size"), "sha256": want.get("sha256")}
        ):
            changed.append(path)
            if first:
                break
    return changed


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
