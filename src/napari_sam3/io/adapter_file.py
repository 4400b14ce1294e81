"""Writing a SAM3 adapter file (`core.sam3.adapter`) atomically, and naming it by content."""

from __future__ import annotations

import os
from pathlib import Path

from napari_sam3.io.atomic import atomic_path, file_digest


def write_adapter(adapter, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``adapter`` (a `Sam3Adapter`) as safetensors with its provenance; refuses to replace
    an existing file unless ``overwrite`` (`Sam3Error` naming --overwrite)."""
    from safetensors.torch import save_file

    tensors, meta = adapter.file_contents()
    with atomic_path(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def adapter_digest(path: str | os.PathLike) -> str:
    """The adapter file's content digest (batch fingerprints name adapters by content)."""
    return file_digest(path)["sha256"][:16]
