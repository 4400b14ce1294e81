"""The output folder of a run: made usable, locked against a second run, OS errors explained.

A run holds ``<out>/.sam3.lock`` (its pid, host and start time) from start to end. A second run into
the same folder refuses with who holds it; a lock whose process is gone (same host, pid not alive)
is stale and taken over. Only while holding the lock are leftover ``.sam3tmp-*`` files removed:
every writer into the folder holds the lock, so they belong to runs that died.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import clean_stale_temporaries
from napari_sam3.io.manifest import now_iso

LOCK_NAME = ".sam3.lock"

_FIX = {
    errno.ENOSPC: "the disk is full; free space there or choose another --out",
    errno.EDQUOT: "the disk quota is used up; free space there or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "no permission to write there; change the folder's permissions or choose "
    "another --out",
    errno.EPERM: "no permission to write there; change the folder's permissions or choose "
    "another --out",
    errno.ENOTDIR: "part of that path is a file, not a folder; choose another --out",
    errno.EEXIST: "a file is in the way; move it or choose another --out",
    errno.EISDIR: "a folder is in the way; move it or choose another --out",
    errno.ENAMETOOLONG: "the name is too long; use a shorter --out",
}


class OutputError(Sam3Error):
    """The output folder cannot be written (disk full, read-only, permissions): the run stops."""


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One line: what could not be done where, and the fix."""
    where = exc.filename or path or "the output folder"
    why = exc.strerror or type(exc).__name__
    fix = _FIX.get(exc.errno or -1, "check that folder, or choose another --out")
    return f"cannot write {where}: {why}; {fix}."


def prepare_out_dir(out: Path) -> None:
    """Create ``out`` (and parents); `OutputError` with the reason when that is not possible."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputError(
                f"--out {out}: {parent} is a file, not a folder; choose another --out."
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".sam3-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(describe_os_error(exc, out)) from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def read_lock(out: Path) -> dict | None:
    try:
        info = json.loads((out / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _lock_pid(held: dict | None) -> int | None:
    """The pid a lock names; None for a lock that names none ("abc", null, a negative number)."""
    pid = (held or {}).get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    return pid


def _create_lock(path: Path, me: dict) -> None:
    """Create ``path`` holding ``me``, all at once: written to a temporary file, then hard-linked
    into place (fails with FileExistsError when a lock is there), so no reader ever sees a 0-byte
    or half-written lock, and a full disk leaves no lock behind."""
    tmp = path.with_name(f".sam3tmp-lock-{os.getpid()}-{time.monotonic_ns()}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # file systems without hard links: exclusive create, then write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(me, f)
            except OSError:
                path.unlink(missing_ok=True)
                raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(
    out: Path, command: str = "", wait: bool = False, poll: float = 2.0
) -> Iterator[None]:
    """Hold ``out``'s run lock; `Sam3Error` when a live run holds it (``wait``: wait for it)."""
    path = out / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": now_iso(),
        "command": command,
    }
    tries = 0
    while tries < 3:
        tries += 1
        try:
            _create_lock(path, me)
        except FileExistsError:
            held = read_lock(out)
            pid = _lock_pid(held)
            if pid is None:  # 0 bytes (disk full at a start), garbage, or a pid that is no pid
                time.sleep(0.2)  # a writer without hard links may be mid-write: look once more
                held = read_lock(out)
                pid = _lock_pid(held)
            if pid is None:
                print(
                    f"napari-sam3: the run lock {path} is broken (empty or not a lock); "
                    "treating it as stale and taking it over.",
                    file=sys.stderr,
                )
                path.unlink(missing_ok=True)
                continue
            host = str(held.get("host", ""))
            if host == me["host"] and not _alive(pid):
                path.unlink(missing_ok=True)  # its run is gone
                continue
            if wait:
                time.sleep(poll)
                tries = 0
                continue
            raise Sam3Error(
                f"another napari-sam3 run ({held.get('command') or 'pid'} pid {pid} on {host}, "
                f"started {held.get('started')}) is writing into {out}; wait for it to finish or "
                f"choose another --out, or pass --wait (if no run is using it, delete {path})."
            ) from None
        except OSError as exc:
            raise OutputError(describe_os_error(exc, path)) from exc
        break
    else:  # pragma: no cover - a lock file that keeps vanishing and reappearing
        raise Sam3Error(f"cannot take the run lock {path}; delete it if no run is using it.")
    try:
        for sub in (
            out,
            out / ".done",
            out / ".parts",
            out / "pairs",
            out / "pairs" / "images",
            out / "pairs" / "masks",
        ):
            clean_stale_temporaries(sub)  # we hold the lock: they belong to dead runs
        yield
    finally:
        held = read_lock(out)
        if held and held.get("pid") == me["pid"] and held.get("host") == me["host"]:
            path.unlink(missing_ok=True)
