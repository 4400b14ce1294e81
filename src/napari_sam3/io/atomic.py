"""Atomic, no-clobber file writes.

Every file this package writes goes through `atomic_path`: the data is written to a temporary file in
the destination folder and moved into place with ``os.replace``, so a reader (or a crash) never sees a
half-written file. An existing file is only replaced when ``overwrite=True``; otherwise `Sam3Error`
names the ``--overwrite`` option.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from napari_sam3.core.errors import Sam3Error

TMP_PREFIX = ".sam3tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise `Sam3Error` when ``path`` exists and ``overwrite`` is False; return it as a `Path`."""
    path = Path(path)
    if path.is_dir():
        raise Sam3Error(f"{path} is a folder; give a file name to write to.")
    if path.exists() and not overwrite:
        raise Sam3Error(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary file keeps the destination's suffix (writers that pick a format from the suffix
    still work). On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=TMP_PREFIX + path.stem + "-",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        if not overwrite and path.exists():  # somebody else won the race
            raise Sam3Error(
                f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
            )
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


def write_json(path: str | os.PathLike, obj, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN written as null)."""
    return write_text(
        path, json.dumps(_json_safe(obj), indent=2, ensure_ascii=False) + "\n", overwrite
    )


def file_digest(path: str | os.PathLike) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file (completion records, manifests)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def clean_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove temporary files a killed writer left in ``folder``; return how many."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _json_safe(obj):
    """Convert numpy scalars/arrays, paths and NaN to plain JSON values."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
