"""Writing nucleus-network weights files (safetensors with metadata), atomically, never over the
shipped weights, and never over a user's file without their say (``overwrite``)."""

from __future__ import annotations

import json
from pathlib import Path

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import atomic_path, check_writable

__all__ = ["check_network_out", "save_network"]


def check_network_out(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` checked before a training run: ``<name>.safetensors``, not the shipped weights,
    not an existing file unless ``overwrite``."""
    from napari_sam3.core.learned.model_file import SHIPPED

    path = Path(path)
    if path.resolve() == SHIPPED.resolve():
        raise Sam3Error("The shipped network is never overwritten; save under another name.")
    if path.suffix != ".safetensors":
        raise Sam3Error(f"{path}: name the network file <name>.safetensors.")
    return check_writable(path, overwrite)


def save_network(net, path: str | Path, meta: dict, overwrite: bool = False) -> Path:
    """Write ``net``'s weights with ``meta`` (values made strings; ``widths`` and
    ``canonical_diameter`` added) atomically; refuses an existing file unless ``overwrite``."""
    from safetensors.torch import save_file

    from napari_sam3.core.learned.network import CANONICAL_DIAMETER

    full = {
        "widths": json.dumps(list(net.widths)),
        "canonical_diameter": str(CANONICAL_DIAMETER),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()},
    }
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata=full)
    return Path(path)
