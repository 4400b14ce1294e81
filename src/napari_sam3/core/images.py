"""Any napari image plane -> the 8-bit RGB picture SAM3 expects.

Microscopy arrives as 16-bit, float, multichannel or with hot pixels. SAM3 was trained on photos, so
we map each plane to uint8 RGB with robust percentile scaling (hot pixels and NaNs do not flatten the
contrast). The choices are recorded in `Preprocessing`, which is part of the embedding-cache key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from napari_sam3.core.errors import Sam3Error

MIN_SIDE = 8  # smaller planes carry no object SAM3 could see


@dataclass(frozen=True)
class Preprocessing:
    """How a plane becomes model input; part of every cache key.

    ``percentiles`` are the low/high percentiles mapped to 0/255 for non-uint8 data; ``channel`` picks
    one channel of a multichannel plane (None: use RGB(A) as is, or gray).
    """

    percentiles: tuple[float, float] = (0.5, 99.8)
    channel: int | None = None


def check_plane_size(shape) -> None:
    """The one minimum plane size of every method (SAM3 and the classical counter alike)."""
    if len(shape) < 2 or min(shape) < MIN_SIDE:
        raise Sam3Error(
            f"The image is only {'x'.join(map(str, shape))} pixels; at least "
            f"{MIN_SIDE}x{MIN_SIDE} is needed."
        )


def validate_plane(plane: np.ndarray, *, rgb: bool | None = None) -> np.ndarray:
    """Check a plane's shape and values; return it as an array. Raises `Sam3Error` with the fix."""
    arr = np.asarray(plane)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * np.uint8(255)  # a mask: 0/255, not a black 0/1 picture
    if not (np.issubdtype(arr.dtype, np.number)):
        raise Sam3Error(f"The image has data type {arr.dtype}; a numeric image is needed.")
    if np.iscomplexobj(arr):
        raise Sam3Error("The image holds complex numbers; take its magnitude first (np.abs).")
    if rgb and arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        raise Sam3Error(
            f"The image is marked RGB but has shape {arr.shape}; RGB(A) data needs 3 or 4 values "
            "in the last axis."
        )
    is_color = _is_color(arr, rgb)
    spatial = arr.shape[:-1] if (is_color and arr.ndim == 3) else arr.shape
    if arr.ndim == 3 and not is_color:
        spatial = arr.shape[1:] if channel_axis(arr) == 0 else arr.shape[:-1]
    if arr.ndim > 3 or (arr.ndim == 3 and not is_color and min(arr.shape[0], arr.shape[-1]) > 16):
        raise Sam3Error(
            f"The image has shape {arr.shape}: SAM3 works on one 2-D plane (gray, RGB or a chosen "
            "channel). For a z/t stack pick a slice (the widget uses the current slice; the CLI "
            "processes each plane)."
        )
    check_plane_size(spatial[-2:])
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).any():
        raise Sam3Error("The image contains no finite values (all NaN or infinite).")
    return arr


def to_model_rgb(
    plane: np.ndarray,
    preprocessing: Preprocessing = Preprocessing(),
    *,
    rgb: bool | None = None,
) -> np.ndarray:
    """Return an (H, W, 3) uint8 picture of ``plane`` for SAM3.

    Accepts 2-D gray, (H, W, 3|4) RGB(A), or (C, H, W) / (H, W, C) multichannel with
    ``preprocessing.channel`` naming the channel. uint8 RGB passes through unchanged; everything else
    is scaled per channel from the low to the high percentile of its finite values (NaN -> 0).
    """
    arr = validate_plane(plane, rgb=rgb)
    is_color = _is_color(arr, rgb)
    if arr.ndim == 3 and preprocessing.channel is not None:
        axis = -1 if is_color else channel_axis(arr)
        n = arr.shape[axis]
        if not 0 <= preprocessing.channel < n:
            raise Sam3Error(f"Channel {preprocessing.channel} does not exist; the image has {n}.")
        arr = np.take(arr, preprocessing.channel, axis=axis)
        is_color = False
    elif arr.ndim == 3 and not is_color:
        raise Sam3Error(
            f"The image has {arr.shape[0]} channels; choose one channel (or give RGB data)."
        )
    if is_color:
        arr = arr[..., :3]  # alpha carries no content for the model
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr)
        chans = [_rescale(arr[..., c], preprocessing.percentiles) for c in range(3)]
        return np.stack(chans, axis=-1)
    gray = arr if arr.dtype == np.uint8 else _rescale(arr, preprocessing.percentiles)
    return np.repeat(gray[..., None], 3, axis=-1)


def _is_color(arr: np.ndarray, rgb: bool | None) -> bool:
    """RGB(A) only for 3-D data with 3 or 4 values last; ``rgb=True`` on a 2-D plane means nothing."""
    if arr.ndim != 3:
        return False
    return bool(rgb) if rgb is not None else arr.shape[-1] in (3, 4)


def channel_axis(arr: np.ndarray) -> int:
    """The channel axis of a 3-D multichannel plane: 0 for (C, H, W), -1 for (H, W, C)."""
    return 0 if arr.shape[0] <= arr.shape[-1] else -1


def _rescale(channel: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    data = channel.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    values = data[finite]
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:  # constant (or nearly) plane: fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    # NaN and -inf show as the low end, +inf as the high end
    filled = np.where(finite, data, np.where(data > 0, hi, lo))
    out = (filled - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def content_hash(array: np.ndarray) -> str:
    """A short hash of an array's bytes, shape and dtype (cache keys, manifests)."""
    arr = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()
