"""Opening input files with clear errors (shared by the readers and the TIFF module)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from napari_sam3.core.errors import Sam3Error


@contextlib.contextmanager
def open_tiff(path: str | os.PathLike):
    """`tifffile.TiffFile` with empty/corrupt files turned into `Sam3Error`."""
    import tifffile

    path = Path(path)
    check_file(path)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
        raise Sam3Error(f"{path.name}: not a readable TIFF ({short_error(exc)}).") from exc
    try:
        if not tif.series:
            raise Sam3Error(f"{path.name}: the TIFF holds no image.")
        yield tif
    finally:
        tif.close()


def check_file(path: Path) -> None:
    if not path.exists():
        raise Sam3Error(f"{path}: no such file.")
    if not path.is_file():
        raise Sam3Error(f"{path}: not a file.")
    if path.stat().st_size == 0:
        raise Sam3Error(f"{path.name}: the file is empty (0 bytes).")


def short_error(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:200]
