"""What a checkpoint folder must look like before transformers may read it: safetensors only, all
inside the folder, and a config that is a JSON object.

A ``model.safetensors.index.json`` names the shard file of every weight. transformers follows those
names as given, so an index could make it unpickle ``pytorch_model.bin`` (code execution, were it
not for ``weights_only``) or read ``../outside.safetensors``. Every name must be a plain relative
``.safetensors`` path inside the folder, and the file must be there. "Inside" is checked on the
path as written, not after following links: the Hugging Face cache links snapshot files to
``../../blobs/<hash>``, which is legitimate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from napari_sam3.core.errors import Sam3Error

INDEX_FILE = "model.safetensors.index.json"

__all__ = ["INDEX_FILE", "check_config_object", "check_weight_files"]


def check_config_object(config, config_file: Path) -> dict:
    """``config`` (parsed config.json) as a dict; `Sam3Error` when it is not a JSON object."""
    if not isinstance(config, dict):
        raise Sam3Error(
            f"{config_file} is not a model configuration (a JSON object was expected, found a "
            f"JSON {type(config).__name__}); download the checkpoint again."
        )
    return config


def _inside(folder: Path, name: str) -> bool:
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or os.path.isabs(name):
        return False
    return True


def check_weight_files(folder: Path, name: str | None = None) -> list[str]:
    """The shard files the folder's weights come from; `Sam3Error` when any is unsafe or absent."""
    name = name or str(folder)
    index = folder / INDEX_FILE
    if not index.is_file():
        if (folder / "model.safetensors").is_file():
            return ["model.safetensors"]
        raise Sam3Error(
            f"{name} has no model.safetensors; napari-sam3 loads safetensors weights only "
            "(never pickled .bin files). Download the checkpoint again."
        )
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Sam3Error(f"{index} cannot be read ({exc}); download the checkpoint again.") from exc
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise Sam3Error(f"{index} has no weight_map; download the checkpoint again.")
    shards = sorted(set(weight_map.values()), key=str)
    bad = [s for s in shards if not _inside(folder, s)]
    if bad:
        raise Sam3Error(
            f"{index} points outside the checkpoint folder ({', '.join(map(str, bad[:3]))}); "
            "napari-sam3 loads weights only from inside the folder. Download the checkpoint again."
        )
    pickled = [s for s in shards if not s.endswith(".safetensors")]
    if pickled:
        raise Sam3Error(
            f"{index} maps weights to {', '.join(pickled[:3])}: napari-sam3 loads safetensors "
            "weights only (a pickled file can run code). Download the checkpoint again."
        )
    absent = [s for s in shards if not (folder / s).is_file()]
    if absent:
        raise Sam3Error(
            f"The checkpoint folder {name} is incomplete: {', '.join(absent[:3])} missing. "
            "Download the whole checkpoint again."
        )
    return shards
