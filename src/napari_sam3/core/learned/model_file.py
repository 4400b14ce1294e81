"""The shipped nucleus network's weights: one safetensors file inside the package, loaded once."""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import torch

from napari_sam3.core.defaults import NUCLEUS_NET_ENV
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.learned.network import NucleusNet

__all__ = ["SHIPPED", "WIDTHS", "file_sha256", "load_network", "load_trainable", "read_metadata"]

SHIPPED = Path(__file__).resolve().parent / "nucleus_net.safetensors"
WIDTHS = (8, 16, 32, 48)
# a file's metadata is checked before any network is built: a foreign or damaged header must not
# allocate gigabytes (the shipped net is (8, 16, 32, 48), ~0.4 MB)
MAX_WIDTH, MAX_LEVELS = 256, 6
_LOCK = threading.Lock()


def _not_ours(path, why: str) -> Sam3Error:
    return Sam3Error(
        f"{path} is not a nucleus-network weights file ({why}); train one with "
        f"`napari-sam3 train` (or training/train_nucleus_net.py), or leave the network out (and "
        f"unset {NUCLEUS_NET_ENV}) to use the shipped one."
    )


def read_metadata(path: str | Path) -> dict:
    """The file's metadata, checked (widths within MAX_WIDTH x MAX_LEVELS) without building a
    network; `Sam3Error` naming the fix for a missing, damaged or foreign file."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise Sam3Error(
            f"The nucleus network's weights are missing ({path}); give an existing "
            f".safetensors file, unset {NUCLEUS_NET_ENV} if it names this file, reinstall "
            f"napari-sam3, or count with method='classical'."
        )
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        widths = json.loads(meta.get("widths", json.dumps(WIDTHS)))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: say which and why
        raise _not_ours(path, f"{type(exc).__name__}: {exc}") from exc
    ok = (
        isinstance(widths, list)
        and 1 <= len(widths) <= MAX_LEVELS
        and all(isinstance(w, int) and 1 <= w <= MAX_WIDTH for w in widths)
    )
    if not ok:
        raise _not_ours(path, f"widths {str(widths)[:60]} out of range")
    meta["widths"] = json.dumps(widths)
    return meta


def load_trainable(path: str | Path | None = None) -> tuple[NucleusNet, dict]:
    """A fresh, unfused copy of a network file (train mode) to fine-tune; (network, metadata)."""
    from safetensors.torch import load_file

    path = path or SHIPPED
    meta = read_metadata(path)
    net = NucleusNet(tuple(json.loads(meta["widths"])))
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001
        raise _not_ours(path, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    return net, meta


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def _load(path: str, _stamp: tuple) -> tuple[NucleusNet, dict]:
    net, meta = load_trainable(path)
    net.eval()
    _fuse_batchnorm(net)
    # channels-last convolutions run ~2x faster on CPU (oneDNN) than the default layout
    net = net.to(memory_format=torch.channels_last)
    return net, meta


def load_network(path: str | Path | None = None) -> tuple[NucleusNet, dict]:
    """(network, file metadata): the shipped weights, or ``path``, or the file
    ``$NAPARI_SAM3_NUCLEUS_NET`` names (your own run of training/train_nucleus_net.py). Eval
    mode, batch norms folded into the convolutions, channels-last weights (feed it channels-last
    input, as `predict.predict_maps` does); loaded once per file."""
    path = path or os.environ.get(NUCLEUS_NET_ENV, "").strip() or SHIPPED
    return _load_locked(path)


def _load_locked(path: str | Path) -> tuple[NucleusNet, dict]:
    with _LOCK:  # two worker threads must not build it twice
        try:  # a file retrained under the same name is loaded again (size + mtime)
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = ()
        return _load(str(path), stamp)


def _fuse_batchnorm(net: torch.nn.Module) -> None:
    """Fold each Conv2d + BatchNorm2d pair (eval) into one convolution: ~30 % less CPU time."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in net.modules():
        if isinstance(seq, torch.nn.Sequential):
            mods = list(seq)
            for i in range(len(mods) - 1):
                if isinstance(mods[i], torch.nn.Conv2d) and isinstance(
                    mods[i + 1], torch.nn.BatchNorm2d
                ):
                    seq[i] = fuse_conv_bn_eval(mods[i], mods[i + 1])
                    seq[i + 1] = torch.nn.Identity()
