"""One float intensity plane from what the user loaded, its pixel noise, and hot-pixel removal."""

from __future__ import annotations

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import channel_axis, check_plane_size

__all__ = [
    "contrast_to_noise",
    "pixel_noise",
    "remove_hot_pixels",
    "stat_sample",
    "to_intensity",
]


def to_intensity(
    image: np.ndarray, channel: int | None = None, rgb: bool | None = None
) -> np.ndarray:
    """One float32 intensity plane from gray, RGB(A) or multichannel data; NaN/inf -> median.

    Raises `Sam3Error` for empty, non-numeric, all-NaN or >3-D input.
    """
    arr = np.asarray(image)
    if arr.size == 0:
        raise Sam3Error(f"The image is empty (shape {arr.shape}); nothing to count.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise Sam3Error(f"The image has data type {arr.dtype}; a real numeric image is needed.")
    if arr.ndim == 3:
        is_color = rgb if rgb is not None else arr.shape[-1] in (3, 4)
        axis = -1 if is_color else channel_axis(arr)
        if channel is not None:
            if not 0 <= channel < arr.shape[axis]:
                raise Sam3Error(
                    f"Channel {channel} does not exist; the image has {arr.shape[axis]}."
                )
            arr = np.take(arr, channel, axis=axis)
        elif is_color:
            arr = arr[..., :3].astype(np.float32).mean(axis=-1)
        elif arr.shape[axis] == 1:
            arr = np.take(arr, 0, axis=axis)
        else:
            raise Sam3Error(
                f"The image has shape {arr.shape}: {arr.shape[axis]} channels. Choose one channel "
                "(channel=...) or count each plane of a stack with count_stack."
            )
    if arr.ndim != 2:
        raise Sam3Error(
            f"The image has shape {arr.shape}; counting works on one 2-D plane (use count_stack for "
            "a z/t stack)."
        )
    check_plane_size(arr.shape)
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        finite = np.isfinite(out)
        if not finite.any():
            raise Sam3Error("The image contains no finite values (all NaN or infinite).")
        out = np.where(finite, out, np.float32(np.median(out[finite])))
    return out


def stat_sample(img: np.ndarray) -> np.ndarray:
    """A strided view of <= ~512 x 512 pixels: percentiles in ms on any image size."""
    return img[:: max(1, img.shape[0] // 512), :: max(1, img.shape[1] // 512)]


def pixel_noise(img: np.ndarray) -> float:
    """Pixel noise (sigma) from differences of neighbouring pixels.

    A contiguous corner, not a stride: strided pixels are not neighbours.
    """
    d = np.abs(np.diff(img[:512, :512], axis=1)).ravel()
    mad = float(np.median(d))
    if mad > 0 or d.size == 0:
        return mad / 0.954
    # Quantised data quieter than one grey level (8-bit): most differences are 0. The RMS of the
    # differences under their 90th percentile, corrected for that truncation (0.789 for a
    # Gaussian) and for the difference of two pixels (sqrt 2), still measures the noise.
    q = float(np.percentile(d, 90)) or float(d.max())
    core = d[d <= q]
    return float(np.sqrt(np.mean(core.astype(np.float64) ** 2))) / 0.789 / np.sqrt(2.0)


def remove_hot_pixels(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace single-pixel spikes (hot or saturated camera pixels) by their neighbours' median.

    A pixel is a spike when it exceeds its brightest 8-neighbour by more than half its height above
    the image median: no optically blurred object can do that. Only the top 1 % of pixels are
    examined, so this costs a few ms where a full median filter would cost seconds.
    Returns the cleaned image (the input when nothing changed) and the number of pixels replaced.
    """
    h, w = img.shape
    if h < 3 or w < 3:
        return img, 0
    med, p99 = np.percentile(stat_sample(img), (50, 99))
    ys, xs = np.nonzero(img[1:-1, 1:-1] > p99)
    if ys.size == 0 or ys.size > 0.02 * h * w:
        return img, 0
    ys += 1
    xs += 1
    nb = np.stack(
        [img[ys + dy, xs + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], axis=1
    )
    v = img[ys, xs]
    noise = pixel_noise(img)
    spike = ((v - nb.max(axis=1)) > 0.5 * (v - np.float32(med))) & (v - med > 8 * noise)
    if not spike.any():
        return img, 0
    out = img.copy()
    out[ys[spike], xs[spike]] = np.median(nb[spike], axis=1)
    return out, int(spike.sum())


def contrast_to_noise(img: np.ndarray, work: np.ndarray, mask: np.ndarray) -> float:
    """(median inside - median outside) of the working image / pixel noise of ``img``."""
    step = max(1, int(np.sqrt(work.size / 250_000)))
    sub, m = work[::step, ::step], mask[::step, ::step]
    if m.all() or not m.any():
        return float("inf")
    noise = pixel_noise(img)
    contrast = abs(float(np.median(sub[m])) - float(np.median(sub[~m])))
    return contrast / noise if noise > 0 else float("inf")
