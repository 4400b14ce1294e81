"""Find and load SAM3: hub id or local folder, device and dtype, errors that say how to fix them.

The ``facebook/sam3`` checkpoint is a ``sam3_video`` checkpoint holding the detector (text and
exemplar prompts) and the tracker (clicks and boxes). We load it ONCE as ``Sam3VideoModel``: the
tracker there has no vision encoder of its own and is fed from the detector's backbone through
``tracker_neck`` (see ``Sam3VideoModel.get_vision_features_for_tracker``). Loading ``Sam3Model`` and
``Sam3TrackerModel`` separately would keep two copies of the 446M-parameter backbone and encode
every image twice.

torch and transformers are imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sam3.core.defaults import HUB_PAGE, MODEL_ENV, MODEL_ID, default_model
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.sam3.checkpoint_files import check_config_object, check_weight_files
from napari_sam3.core.sam3.load_errors import out_of_memory_error
from napari_sam3.core.sam3.triton_isolation import isolate_triton

DEFAULT_SOURCE, ENV_MODEL = MODEL_ID, MODEL_ENV  # names kept for callers; values in core.defaults
EXPECTED_MODEL_TYPE = "sam3_video"

ACCESS_FIX = (
    f"To use the official weights, accept the licence on {HUB_PAGE} and run `hf auth login` "
    f"(or set HF_TOKEN); or download the checkpoint once and pass its local folder "
    f"(or set {ENV_MODEL}=/path/to/sam3)."
)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
# Only what loading needs: never the original ``sam3.pt`` or other extras in the repository.
_HUB_PATTERNS = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
]

_lock = threading.RLock()
_cache: dict[tuple[str, str, str], LoadedModel] = {}


@dataclass
class LoadedModel:
    """A loaded SAM3 checkpoint: the joint model, its processor, and where it came from."""

    model: Any  # transformers.Sam3VideoModel
    processor: Any  # transformers.Sam3Processor
    source: str
    folder: Path
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    meta: dict = field(default_factory=dict)
    engine: Any = field(default=None, repr=False)  # the Sam3Engine built on it (core.engine)

    @property
    def detector(self):
        """The detector (``Sam3Model``): vision backbone, text encoder, DETR, mask head."""
        return self.model.detector_model

    @property
    def tracker(self):
        """The tracker (``Sam3TrackerVideoModel`` without a vision encoder): prompt encoder + masks."""
        return self.model.tracker_model

    @property
    def vision_encoder(self):
        """The ONE vision backbone (+ detector neck) shared by detector and tracker."""
        return self.model.detector_model.vision_encoder

    @property
    def image_size(self) -> int:
        return int(self.processor.image_processor.size["height"])

    @property
    def key(self) -> str:
        """Identifies model + weights + dtype + device in cache keys."""
        return f"{self.source}|{self.folder}|{self.dtype}|{self.device}"


# --------------------------------------------------------------------------- resolution
def resolve_source(source: str | os.PathLike | None = None) -> str:
    """The argument, else ``$NAPARI_SAM3_MODEL``, else ``facebook/sam3``."""
    if source is not None and str(source).strip():
        return str(source).strip()
    return default_model()


def resolve_device(device: Any = "auto"):
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise Sam3Error(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise Sam3Error(
            f"Device {device!r} was asked for, but no CUDA GPU is available; use 'cpu'."
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise Sam3Error(
                f"Device {device!r} was asked for, but MPS is not available; use 'cpu'."
            )
    return dev


_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float": "float32",
    "float32": "float32",
}


def resolve_dtype(dtype: Any, device) -> Any:
    """None: bfloat16 on CUDA, float32 elsewhere. Accepts torch dtypes and their names."""
    import torch

    if dtype is None or str(dtype) == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise Sam3Error(f"Unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'.")
    return getattr(torch, name)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(source: str) -> bool:
    """Anything that cannot be a hub id (``name`` or ``owner/name``) is taken as a folder path."""
    return not _HUB_ID.match(source) or source.endswith((".", "/")) or ".." in source


def locate_checkpoint(source: str) -> Path:
    """A local folder holding the checkpoint: the folder itself, or the hub snapshot (downloaded
    or cached). Raises `Sam3Error` with the fix for every access problem."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise Sam3Error(
                f"{source} is a file; SAM3 needs the checkpoint folder (config.json, "
                "model.safetensors, processor and tokenizer files)."
            )
        return path.resolve()
    if _looks_like_path(source):
        raise Sam3Error(
            f"The model folder {source} does not exist. Pass the folder of a downloaded SAM3 "
            f"checkpoint (or a hub id such as {DEFAULT_SOURCE}). {ACCESS_FIX}"
        )
    return _download(source)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        folder = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS)
    except GatedRepoError as exc:
        raise Sam3Error(
            f"The model {repo_id} is gated and this account has no access yet. {ACCESS_FIX}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise Sam3Error(
            f"The model {repo_id} was not found on the Hugging Face hub (and no local folder of "
            f"that name exists), or it is private/gated and you are not logged in. {ACCESS_FIX}"
        ) from exc
    except RevisionNotFoundError as exc:
        raise Sam3Error(f"The model {repo_id} has no such revision. {ACCESS_FIX}") from exc
    except HFValidationError as exc:
        raise Sam3Error(
            f"{repo_id!r} is neither an existing folder nor a valid hub id (owner/name). "
            f"{ACCESS_FIX}"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise Sam3Error(
            f"The model {repo_id} is not in the local Hugging Face cache and the hub cannot be "
            "reached (offline, HF_HUB_OFFLINE=1, or no network); no local folder of that name "
            f"exists either. Connect once to download it, or pass a local folder. {ACCESS_FIX}"
        ) from exc
    except OSError as exc:  # network failures, disk full, permission problems
        raise Sam3Error(f"Could not fetch the model {repo_id}: {exc}. {ACCESS_FIX}") from exc
    except Exception as exc:  # httpx / requests errors vary between hub versions
        raise Sam3Error(f"Could not fetch the model {repo_id}: {exc}. {ACCESS_FIX}") from exc
    return Path(folder)


def check_folder(folder: Path, source: str | None = None) -> dict:
    """Validate a checkpoint folder before loading; returns its config.json as a dict."""
    name = source or str(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise Sam3Error(
            f"{name} holds no config.json, so it is not a SAM3 checkpoint folder (or the download "
            f"is incomplete). {ACCESS_FIX}"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Sam3Error(
            f"{config_file} cannot be read ({exc}); download the checkpoint again."
        ) from exc
    config = check_config_object(config, config_file)
    model_type = config.get("model_type")
    if model_type != EXPECTED_MODEL_TYPE:
        hint = ""
        if model_type in ("sam3", "sam3_tracker", "sam3_tracker_video"):
            hint = (
                " It holds only part of SAM3; napari-sam3 needs the full checkpoint with detector "
                "and tracker (as published in facebook/sam3)."
            )
        raise Sam3Error(
            f"{name} is a {model_type or 'unknown'!s} checkpoint, not SAM3 "
            f"(model_type {EXPECTED_MODEL_TYPE!r}).{hint} {ACCESS_FIX}"
        )
    missing = []
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        missing.append("model.safetensors")
    if not any((folder / f).is_file() for f in _PROCESSOR_FILES):
        missing.append("processor_config.json")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer.json")
    if missing:
        raise Sam3Error(
            f"The checkpoint folder {name} is incomplete: {', '.join(missing)} missing. Download "
            f"the whole checkpoint again. {ACCESS_FIX}"
        )
    check_weight_files(folder, name)  # safetensors only, every shard inside the folder
    return config


# --------------------------------------------------------------------------- loading
def load_model(
    source: str | os.PathLike | None = None, device: Any = "auto", dtype: Any = None
) -> LoadedModel:
    """Load SAM3 once per process (thread-safe), cached by (source, device, dtype)."""
    src = resolve_source(source)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    local = Path(src).expanduser()
    key = (str(local.resolve()) if local.exists() else src, str(dev), str(dt))
    with _lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _load(src, dev, dt)
            _cache[key] = loaded
        return loaded


def _load(source: str, device, dtype) -> LoadedModel:
    import torch

    folder = locate_checkpoint(source)
    check_folder(folder, source)
    isolate_triton()  # before transformers -> torchvision -> torch._dynamo -> triton (see module)
    try:
        from transformers import Sam3Processor, Sam3VideoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise Sam3Error(
            f"This transformers installation has no SAM3 ({exc}). napari-sam3 needs "
            "transformers >= 5.0: pip install -U 'transformers>=5'."
        ) from exc

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # we report missing weights ourselves, as an error
    try:
        model, info = Sam3VideoModel.from_pretrained(
            str(folder), dtype=dtype, output_loading_info=True, use_safetensors=True
        )
        processor = Sam3Processor.from_pretrained(str(folder))
    except Sam3Error:
        raise
    except ImportError as exc:  # e.g. the SAM3 image processor needs torchvision
        raise Sam3Error(
            f"SAM3 needs a package that is missing or broken: {exc}. Install torchvision "
            "matching your torch (pip install torchvision) and try again."
        ) from exc
    except out_of_memory_error(torch) as exc:
        raise Sam3Error(
            f"Not enough memory to load SAM3 on {device}. Close other programs or use device='cpu'."
        ) from exc
    except Exception as exc:
        raise Sam3Error(
            f"Loading SAM3 from {source} failed: {type(exc).__name__}: {exc}. The folder may be "
            f"damaged or from an incompatible version; download it again. {ACCESS_FIX}"
        ) from exc
    finally:
        hf_logging.set_verbosity(previous)

    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        raise Sam3Error(
            f"The checkpoint {source} lacks {len(missing)} weight(s) SAM3 needs: {shown}. "
            "transformers would fill them with random numbers, so napari-sam3 refuses to load it. "
            f"Download the checkpoint again (the file may be truncated or from another model). "
            f"{ACCESS_FIX}"
        )
    if mismatched:
        shown = ", ".join(str(m[0] if isinstance(m, (tuple, list)) else m) for m in mismatched[:8])
        raise Sam3Error(
            f"The checkpoint {source} has weights of the wrong shape for its config: {shown}. "
            f"Download the checkpoint again. {ACCESS_FIX}"
        )
    try:
        model = model.to(device=device).eval()
    except out_of_memory_error(torch) as exc:
        raise Sam3Error(
            f"Not enough {device.type.upper()} memory for SAM3 ({type(exc).__name__}). Close other "
            "programs using the GPU, or use device='cpu'."
        ) from exc
    for param in model.parameters():
        param.requires_grad_(False)
    meta = {"unexpected_keys": sorted(info.get("unexpected_keys") or [])}
    return LoadedModel(model, processor, source, folder, torch.device(device), dtype, meta)


def cached_models() -> list[LoadedModel]:
    with _lock:
        return list(_cache.values())


def unload_all() -> None:
    """Forget every loaded model and free its memory (GPU memory too)."""
    with _lock:
        _cache.clear()
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and hasattr(mps, "empty_cache") and torch.backends.mps.is_available():
        mps.empty_cache()


__all__ = [
    "ACCESS_FIX",
    "DEFAULT_SOURCE",
    "ENV_MODEL",
    "LoadedModel",
    "cached_models",
    "check_folder",
    "load_model",
    "locate_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "resolve_source",
    "unload_all",
]
