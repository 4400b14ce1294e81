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

__all__ = [
    "SHIPPED",
    "WIDTHS",
    "check_file",
    "configured_path",
    "file_sha256",
    "load_network",
    "load_trainable",
    "read_metadata",
]

SHIPPED = Path(__file__).resolve().parent / "nucleus_net.safetensors"
WIDTHS = (8, 16, 32, 48)
# a file's metadata is checked before any network is built: a foreign or damaged header must not
# allocate gigabytes (the shipped net is (8, 16, 32, 48), ~0.4 MB)
MAX_WIDTH, MAX_LEVELS = 256, 6
_LOCK = threading.Lock()


def configured_path(path: str | Path | None = None) -> str:
    """``path``, else ``$NAPARI_SAM3_NUCLEUS_NET``, else the shipped weights."""
    return str(path or os.environ.get(NUCLEUS_NET_ENV, "").strip() or SHIPPED)


def check_file(path: str | Path | None = None) -> dict:
    """The metadata of a nucleus-network weights file, checked without building the network:
    `Sam3Error` (one line, naming the file and the fix) when it is missing, not safetensors, has
    unusable ``widths``, or holds the tensors of another network (a SAM3 checkpoint, ...)."""
    from safetensors import safe_open

    path = configured_path(path)
    fix = (
        f"give a file from `napari-sam3 train`, unset "
        f"{NUCLEUS_NET_ENV} if it names this file, or count with method='classical'"
        if path != str(SHIPPED)
        else "reinstall napari-sam3, or count with method='classical'"
    )
    if not Path(path).is_file():
        raise Sam3Error(f"The nucleus network's weights file {path} is missing; {fix}.")
    try:
        with safe_open(path, "pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - not a safetensors file at all
        raise Sam3Error(
            f"{path} is not a nucleus-network weights file (not safetensors: "
            f"{type(exc).__name__}); {fix}."
        ) from exc
    try:
        widths = tuple(json.loads(meta.get("widths", json.dumps(WIDTHS))))
        ok = 1 < len(widths) <= MAX_LEVELS and all(
            isinstance(w, int) and 0 < w <= MAX_WIDTH for w in widths
        )
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise Sam3Error(
            f"{path}: its metadata gives the network widths {meta.get('widths')!r}; a nucleus "
            f"network has 2 to {MAX_LEVELS} levels of at most {MAX_WIDTH} channels; {fix}."
        )
    with torch.device("meta"):  # shapes only: nothing allocated
        want = {k: tuple(v.shape) for k, v in NucleusNet(widths).state_dict().items()}
    if shapes != want:
        missing = sorted(set(want) - set(shapes))
        other = sorted(k for k in shapes if want.get(k, shapes[k]) != shapes[k] or k not in want)
        example = (other or missing)[0]
        raise Sam3Error(
            f"{path} holds the weights of another network ({len(other)} of its {len(shapes)} "
            f"tensors do not fit the nucleus network, e.g. {example!r}; {len(missing)} missing); "
            f"{fix}."
        )
    return meta


def _not_ours(path, why: str) -> Sam3Error:
    return Sam3Error(
        f"{path} is not a nucleus-network weights file ({why}); train one with "
        f"`napari-sam3 train` (or training/train_nucleus_net.py), or leave the network out (and "
        f"unset {NUCLEUS_NET_ENV}) to use the shipped one."
    )


def read_metadata(path: str | Path) -> dict:
    """The file's metadata, checked by `check_file` (no network built); widths as JSON."""
    meta = check_file(path)
    meta["widths"] = json.dumps(list(json.loads(meta.get("widths", json.dumps(WIDTHS)))))
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
    return _load_locked(configured_path(path))


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
