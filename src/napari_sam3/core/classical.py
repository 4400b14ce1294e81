"""Classical nucleus/cell segmentation for counting: no weights, seconds on a laptop.

Pipeline (every step scaled to the object diameter, estimated when not given):

1. one intensity plane (RGB -> mean of the colour channels, or a chosen channel; NaN -> median);
   single-pixel spikes (hot / saturated camera pixels) replaced by their neighbours' median;
2. a working resolution where objects are ~10-20 px across: block mean for big objects (a 4096 px
   image of 22 px nuclei is processed at 2048 px), 2x bilinear upsampling for objects < 9 px;
3. robust percentile normalisation (hot pixels do not set the contrast) and automatic polarity
   (bright fluorescent objects or dark objects on a bright field);
4. background / uneven-illumination correction: a low percentile in blocks of ~4 diameters,
   interpolated smoothly, subtracted; then division by a smooth local foreground level, so dim
   corners count like bright ones;
5. Gaussian smoothing scaled to the diameter, automatic threshold (Li by default, or Otsu);
6. touching objects split by a seeded watershed (steepest ascent, pointer jumping); seeds are
   peaks of (distance transform of a stricter mask x smoothed intensity, plus a -LoG blob term for
   objects < 9 px), at least a fifth of a diameter apart; neighbouring basins with seeds < d/2
   apart and a dip < 1 % of the lower peak between them are merged again (texture, not a contact);
7. size filter, optional removal of objects touching the border, sequential ids, back to full size.

The diameter estimate is the median equivalent diameter of the blobs that hold one object (area
close to their largest inscribed disc), so touching clumps do not inflate it. The split constants
were tuned on `core.synthetic` images (benchmarks/bench_counting.py prints the accuracy).

Only numpy / scipy.ndimage / scikit-image are used; what is written here is the wiring and the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .errors import Sam3Error
from .images import channel_axis
from .measure import max_per_label
from .progress import Progress, ProgressGen, run_to_end

__all__ = [
    "ClassicalResult",
    "estimate_diameter",
    "iter_segment_classical",
    "segment_classical",
    "to_intensity",
]

WORK_DIAMETER = 10.0  # objects are processed at 10-20 px across (block mean of large objects)
LARGE_IMAGE = 2048 * 2048  # above this many pixels, speed first: objects down to 8 px across
WORK_DIAMETER_LARGE = 8.0
SMALL_DIAMETER = 9.0  # smaller objects are processed at UPSAMPLE x the resolution
UPSAMPLE = 2
MAX_UPSAMPLE_PIXELS = 4096 * 4096 // 4  # beyond this the memory and time are not worth it
# Splitting touching objects, all as fractions of the diameter (tuned on synthetic_nuclei, see
# benchmarks/bench_counting.py): seeds at least MIN_DIST apart; smoothing of the seed surface and of
# the intensity; the distance transform counts up to DT_SAT (deeper inside, intensity decides).
MIN_DIST = 0.2
DT_SMOOTH = 0.04
INT_SMOOTH = 0.03
DT_SAT = 0.5
SEED_T = 0.25  # seed distances are measured in the mask above this fraction of the bright end
# Objects < SMALL_DIAMETER px: blur merges touching nuclei into one mask and one brightness peak,
# so the seed intensity also gets a scale-normalised -LoG at LOG_SIGMA x the diameter.
LOG_SIGMA = 0.2
# Basins are merged again when the pass between them is within MERGE_H of the lower peak and
# their seeds are closer than MERGE_DIST x the diameter (a texture bump, not a second nucleus).
MERGE_H = 0.01
MERGE_DIST = 0.5
SPLIT_MODES = ("shape", "intensity", "shape+intensity")


@dataclass
class ClassicalResult:
    labels: np.ndarray  # full-size label image, sequential ids
    diameter: float  # diameter used (given or estimated), full-resolution pixels
    estimated_diameter: float | None
    polarity: str  # "bright" or "dark"
    threshold: float  # on the normalised, background-corrected image
    work_factor: int  # block size of the working resolution
    warnings: list[str] = field(default_factory=list)
    work_labels: np.ndarray | None = None  # labels at the working resolution (same ids)


# --------------------------------------------------------------------------------- input
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
    if min(arr.shape) < 2:
        raise Sam3Error(
            f"The image is only {arr.shape[0]}x{arr.shape[1]} pixels; nothing to count."
        )
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        finite = np.isfinite(out)
        if not finite.any():
            raise Sam3Error("The image contains no finite values (all NaN or infinite).")
        out = np.where(finite, out, np.float32(np.median(out[finite])))
    return out


def block_mean(img: np.ndarray, f: int) -> np.ndarray:
    """Downscale by an integer factor with a block mean; edge blocks average the pixels they have."""
    if f <= 1:
        return img
    h, w = img.shape
    sh, sw = -(-h // f), -(-w // f)
    out = np.zeros((sh, sw), np.float32)
    cnt = np.zeros((sh, sw), np.float32) if (h % f or w % f) else None
    for dy in range(f):  # f*f strided passes (a tiny reduced axis is slow in numpy)
        for dx in range(f):
            part = img[dy::f, dx::f]
            ph, pw = part.shape
            out[:ph, :pw] += part
            if cnt is not None:
                cnt[:ph, :pw] += 1
    if cnt is None:
        out *= np.float32(1.0 / (f * f))
    else:
        out /= cnt
    return out


def upsample_labels(labels: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour inverse of `block_mean` for a label image, cropped to ``shape``."""
    if f <= 1:
        return labels[: shape[0], : shape[1]]
    out = np.repeat(labels, f, axis=0)[: shape[0]]
    return np.repeat(out, f, axis=1)[:, : shape[1]]


# --------------------------------------------------------------------------------- steps
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
    sample = img[:: max(1, h // 512), :: max(1, w // 512)]
    med, p99 = np.percentile(sample, (50, 99))
    ys, xs = np.nonzero(img[1:-1, 1:-1] > p99)
    if ys.size == 0 or ys.size > 0.02 * h * w:
        return img, 0
    ys += 1
    xs += 1
    nb = np.stack(
        [img[ys + dy, xs + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], axis=1
    )
    v = img[ys, xs]
    # Pixel noise from differences of neighbouring pixels (a contiguous corner, not a stride).
    noise = float(np.median(np.abs(np.diff(img[:512, :512], axis=1)))) / 0.954
    spike = ((v - nb.max(axis=1)) > 0.5 * (v - np.float32(med))) & (v - med > 8 * noise)
    if not spike.any():
        return img, 0
    out = img.copy()
    out[ys[spike], xs[spike]] = np.median(nb[spike], axis=1)
    return out, int(spike.sum())


def _robust_normalise(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    sample = img[:: max(1, img.shape[0] // 512), :: max(1, img.shape[1] // 512)]
    lo, hi = np.percentile(sample, (0.5, 99.9))
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img), float(lo), float(hi)
    out = (img - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(out, -0.5, 1.5, out=out)  # hot pixels stop at 1.5x the bright end
    return out, float(lo), float(hi)


def detect_polarity(norm: np.ndarray) -> str:
    """Return "bright" when the upper tail is longer than the lower one (fluorescence), else "dark"."""
    sample = norm[:: max(1, norm.shape[0] // 512), :: max(1, norm.shape[1] // 512)]
    p_lo, med, p_hi = np.percentile(sample, (1, 50, 99))
    return "bright" if (p_hi - med) >= (med - p_lo) else "dark"


def _interp_matrix(n_out: int, n_grid: int, block: float) -> np.ndarray:
    """Linear interpolation weights from grid cells (centres at (i+0.5)*block) to n_out pixels."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / block - 0.5
    pos = np.clip(pos, 0, n_grid - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_grid - 1)
    t = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_grid), np.float32)
    m[np.arange(n_out), i0] += 1 - t
    m[np.arange(n_out), i1] += t
    return m


def _block_grid(img: np.ndarray, block: int, q: float) -> tuple[np.ndarray, int]:
    """The ``q``-th percentile of each cell of a grid of ~``block`` px (subsampled for speed).

    Returns the grid and the cell size actually used (a multiple of the subsampling step).
    """
    h, w = img.shape
    step = max(1, block // 16)
    b = max(1, block // step)
    block = b * step
    gh, gw = max(1, int(np.ceil(h / block))), max(1, int(np.ceil(w / block)))
    pad = np.pad(img, ((0, gh * block - h), (0, gw * block - w)), mode="reflect")
    sub = pad[::step, ::step]
    cells = sub.reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, b * b)
    return np.percentile(cells, q, axis=2).astype(np.float32), block


def smooth_field(img: np.ndarray, block: int, q: float, grid_filter: str) -> np.ndarray:
    """A smooth field: block percentiles, robustified on the grid, interpolated to full size."""
    grid, block = _block_grid(img, block, q)
    if grid.shape[0] >= 3 and grid.shape[1] >= 3:
        if grid_filter == "min":  # background: cells filled by an object clump are outliers upwards
            grid = ndi.minimum_filter(grid, 3, mode="nearest")
        else:  # foreground level: an empty cell is an outlier downwards
            grid = ndi.maximum_filter(grid, 3, mode="nearest")
        grid = ndi.gaussian_filter(grid, 1.0, mode="nearest")
    my = _interp_matrix(img.shape[0], grid.shape[0], block)
    mx = _interp_matrix(img.shape[1], grid.shape[1], block)
    return (my @ grid) @ mx.T


def _threshold(values: np.ndarray, method: str | float) -> float:
    from skimage import filters

    if not isinstance(method, str):
        return float(method)
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float("inf")
    if method == "otsu":
        return float(filters.threshold_otsu(values))
    if method == "li":
        return float(filters.threshold_li(values))
    raise Sam3Error(f"Unknown threshold method {method!r}; use 'otsu', 'li' or a number.")


def _foreground(img, diameter, polarity, threshold, background):
    """Normalised, corrected, smoothed image and its foreground mask (at the given resolution)."""
    norm, _, _ = _robust_normalise(img)
    if polarity == "auto":
        polarity = detect_polarity(norm)
    if polarity == "dark":
        norm = 1.0 - norm
    elif polarity != "bright":
        raise Sam3Error(f"Unknown polarity {polarity!r}; use 'auto', 'bright' or 'dark'.")
    sigma = max(0.7, diameter / 10.0)
    smooth = ndi.gaussian_filter(norm, sigma, mode="nearest", truncate=3.0)
    block = int(max(16, round(4 * diameter)))
    if background and min(img.shape) >= 2 * block:
        bg = smooth_field(smooth, block, 5, "min")
        corr = smooth - bg
        # Uneven illumination is multiplicative in fluorescence: divide by a smooth local
        # foreground level (never below a fraction of the global one, so empty areas stay empty).
        fg = smooth_field(corr, block * 2, 95, "max")
        glob = float(
            np.percentile(
                corr[:: max(1, corr.shape[0] // 512), :: max(1, corr.shape[1] // 512)], 99
            )
        )
        np.maximum(fg, np.float32(max(glob * 0.25, 1e-6)), out=fg)
        corr /= fg
    else:
        corr = smooth - np.float32(np.percentile(smooth, 1))
    sample = corr[:: max(1, corr.shape[0] // 512), :: max(1, corr.shape[1] // 512)].ravel()
    t = _threshold(sample, threshold)
    return corr, corr > t, polarity, t


def estimate_diameter(
    image: np.ndarray, *, polarity: str = "auto", channel: int | None = None
) -> float:
    """Median object diameter in pixels: twice the largest inscribed radius of each foreground blob.

    The inscribed radius of a touching clump is still about one object's radius, so clumps do not
    inflate the estimate. Works on a <=1024 px view of the image and refines once at a finer scale.
    Returns NaN when nothing is found.
    """
    img, _ = remove_hot_pixels(to_intensity(image, channel))
    return _estimate_diameter(img, polarity)


def work_factor(diameter: float, n_pixels: int) -> int:
    """Block size of the working resolution: objects keep >= 10 px (>= 8 px on large images)."""
    work = WORK_DIAMETER_LARGE if n_pixels > LARGE_IMAGE else WORK_DIAMETER
    return max(1, int(diameter // work))


def _estimate_diameter(img: np.ndarray, polarity: str) -> float:
    # Pass 1: the whole image at <= ~1024 px.
    f = max(1, int(np.ceil(max(img.shape) / 1024)))
    small = block_mean(img, f)
    _, mask, _, _ = _foreground(small, 16.0, polarity, "li", True)
    d = _inscribed_diameter(mask) * f
    if not np.isfinite(d):
        return d
    # Pass 2: at the working resolution that diameter implies, on a <= 1024 px centre crop.
    f2 = work_factor(d, img.size)
    if f2 == f and abs(d / f - 16.0) < 6.0:
        return d
    h, w = img.shape
    side = 1024 * f2
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = block_mean(img[y0 : y0 + side, x0 : x0 + side], f2)
    _, mask, _, _ = _foreground(crop, d / f2, polarity, "li", True)
    d2 = _inscribed_diameter(mask) * f2
    return d2 if np.isfinite(d2) else d


def _inscribed_diameter(mask: np.ndarray) -> float:
    """Median equivalent diameter of the blobs that hold one object each.

    A blob holds one object when its area is close to that of its largest inscribed disc (ratio
    < 1.6; a pair of touching nuclei is ~1.8 and more). With fewer than 5 such blobs, the median
    inscribed diameter of all blobs is used, scaled by 1.2 (the ratio measured on elliptic nuclei).
    """
    lab, n = ndi.label(mask)
    if n == 0:
        return float("nan")
    dt = ndi.distance_transform_edt(mask)
    idx = np.arange(1, n + 1)
    rmax = max_per_label(dt, lab, idx)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    ok = rmax >= 1.0
    if not ok.any():
        return 1.0
    rmax, area = rmax[ok], area[ok]
    big = rmax >= 0.25 * np.median(rmax)  # specks of noise do not pull the median down
    rmax, area = rmax[big], area[big]
    single = area <= 1.6 * np.pi * rmax**2
    if single.sum() >= 5:
        return float(np.median(np.sqrt(4 * area[single] / np.pi)))
    return float(1.2 * 2.0 * np.median(rmax))


# --------------------------------------------------------------------------------- main
def segment_classical(
    image: np.ndarray, diameter: float | None = None, **kwargs
) -> ClassicalResult:
    """Synchronous `iter_segment_classical` (same arguments)."""
    return run_to_end(iter_segment_classical(image, diameter, **kwargs))


def iter_segment_classical(
    image: np.ndarray,
    diameter: float | None = None,
    *,
    channel: int | None = None,
    polarity: str = "auto",
    threshold: str | float = "li",
    background: bool = True,
    split: bool | str = True,
    min_size: float | None = None,
    max_size: float | None = None,
    exclude_border: bool = False,
) -> ProgressGen[ClassicalResult]:
    """Segment blob-like objects (nuclei, cells, colonies); yields `Progress`, returns the result.

    Parameters
    ----------
    diameter : float, optional
        Expected object diameter in pixels; estimated from the image when None.
    polarity : "auto" | "bright" | "dark"
    threshold : "otsu" | "li" | float
        Method, or a value on the normalised background-corrected image (about 0..1).
    background : bool
        Correct uneven background and illumination.
    split : bool or "shape" | "intensity" | "shape+intensity"
        Split touching objects by a seeded watershed (True: "shape+intensity").
    min_size, max_size : float, optional
        Area limits in full-resolution pixels; default min is 15 % of the expected area.
    exclude_border : bool
        Remove objects that touch the image border.
    """
    img = to_intensity(image, channel)
    warnings: list[str] = []
    total = 4
    yield Progress("Classical count: reading the image", 0, total)
    if diameter is None or diameter > 2:  # objects of 1-2 px would look like hot pixels
        img, n_hot = remove_hot_pixels(img)
        if n_hot:
            warnings.append(
                f"Ignored {n_hot} hot pixels (single pixels far above their neighbours)."
            )
    if float(img.max()) <= float(img.min()):
        warnings.append("The image is constant; no objects can be found.")
        return ClassicalResult(
            np.zeros(img.shape, np.int32),
            float(diameter or 0),
            None,
            "bright",
            float("nan"),
            1,
            warnings,
        )
    estimated = None
    if diameter is None:
        yield Progress("Classical count: estimating the object diameter", 1, total)
        estimated = _estimate_diameter(img, polarity)
        if not np.isfinite(estimated):
            warnings.append("No objects stand out from the background.")
            return ClassicalResult(
                np.zeros(img.shape, np.int32),
                float("nan"),
                None,
                "bright",
                float("nan"),
                1,
                warnings,
            )
        diameter = estimated
    diameter = float(diameter)
    if not diameter > 0:
        raise Sam3Error(f"The diameter must be a positive number of pixels, got {diameter}.")
    f = work_factor(diameter, img.size)
    up = UPSAMPLE if (diameter < SMALL_DIAMETER and img.size <= MAX_UPSAMPLE_PIXELS) else 1
    small = block_mean(img, f) if up == 1 else _upsample(img, up)
    d_small = diameter / f * up
    yield Progress("Classical count: background, smoothing, threshold", 2, total)
    corr, mask, polarity_used, t = _foreground(small, d_small, polarity, threshold, background)
    snr = _contrast_to_noise(img, small, mask)
    if snr < 1.5:
        warnings.append(
            f"The objects barely stand out from the noise (contrast {snr:.1f}x the noise); the "
            "count is unreliable. Check the channel, or give the diameter."
        )

    area_px = np.pi * (d_small / 2) ** 2
    min_small = (0.15 * area_px) if min_size is None else float(min_size) / f**2 * up**2
    lab, n = ndi.label(mask)
    mode = split if isinstance(split, str) else "shape+intensity"
    if mode not in SPLIT_MODES:
        raise Sam3Error(f"Unknown split mode {split!r}; use True, False or one of {SPLIT_MODES}.")
    if n and split and d_small >= 3:
        yield Progress("Classical count: splitting touching objects", 3, total)
        lab = _split(mask, lab, d_small, corr, mode, blob=up > 1)
    lab = _size_filter(lab, min_small, None if max_size is None else float(max_size) / f**2)
    if exclude_border:
        from skimage.segmentation import clear_border

        lab = clear_border(lab)  # same objects as at full size: the last row/col covers the edge
    from skimage.segmentation import relabel_sequential

    if up > 1:  # back to the image grid: a pixel is object when half its sub-pixels are
        h0, w0 = img.shape
        blocks = lab[: h0 * up, : w0 * up].reshape(h0, up, w0, up)
        votes = (blocks > 0).sum(axis=(1, 3))
        lab = np.where(votes * 2 >= up * up, blocks.max(axis=(1, 3)), 0)
    lab = relabel_sequential(lab)[0].astype(np.int32, copy=False)
    labels = upsample_labels(lab, f, img.shape)
    return ClassicalResult(labels, diameter, estimated, polarity_used, t, f, warnings, lab)


def _upsample(img: np.ndarray, up: int) -> np.ndarray:
    """Bilinear upsampling by an integer factor (small objects get more pixels to split on)."""
    h, w = img.shape
    ys = (np.arange(h * up, dtype=np.float32) + 0.5) / up - 0.5
    xs = (np.arange(w * up, dtype=np.float32) + 0.5) / up - 0.5
    return ndi.map_coordinates(
        img, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest"
    ).astype(np.float32, copy=False)


def _contrast_to_noise(img: np.ndarray, work: np.ndarray, mask: np.ndarray) -> float:
    """(median inside - median outside) of the working image / pixel noise of the image.

    The noise comes from differences of neighbouring pixels in a contiguous corner of ``img``.
    """
    step = max(1, int(np.sqrt(work.size / 250_000)))
    sub, m = work[::step, ::step], mask[::step, ::step]
    if m.all() or not m.any():
        return float("inf")
    noise = float(np.median(np.abs(np.diff(img[:512, :512], axis=1)))) / 0.954
    contrast = abs(float(np.median(sub[m])) - float(np.median(sub[~m])))
    return contrast / noise if noise > 0 else float("inf")


def _split(
    mask: np.ndarray,
    lab: np.ndarray,
    d: float,
    corr: np.ndarray,
    mode: str = "shape+intensity",
    blob: bool = False,
) -> np.ndarray:
    """Seeded watershed. Seeds are peaks, at least ``MIN_DIST * d`` apart, of the distance
    transform ("shape"), the smoothed intensity ("intensity") or, by default, their product: a
    dim nucleus pressed against a bright one still has its own distance peak, and two nuclei
    with a wide flat contact still have their own brightness peaks. ``blob`` adds a -LoG term
    (small, blurred objects); shallow-dip basins are merged (`_merge_shallow`)."""
    # The distance cue is taken from a stricter mask (above SEED_T of the bright end of the
    # objects), where touching nuclei with dimmer rims already come apart.
    vals = corr[mask]
    strict = corr > np.float32(
        SEED_T * float(np.percentile(vals[:: max(1, vals.size // 200000)], 95))
    )
    dt_seed = ndi.distance_transform_edt(strict & mask).astype(np.float32)
    if mode == "shape":
        dt = ndi.distance_transform_edt(mask).astype(np.float32)
        surf = ndi.gaussian_filter(dt, max(0.5, d * DT_SMOOTH))
        inside = dt > max(0.15 * d, 1.0)
    else:
        inside = ndi.binary_erosion(mask, border_value=1)  # == distance > 1 from background
        inten = ndi.gaussian_filter(corr, max(0.7, d * INT_SMOOTH))
        if blob:  # small objects: add the blob (-LoG) response, which peaks once per nucleus
            sg = d * LOG_SIGMA
            inten -= np.float32(sg * sg) * ndi.gaussian_laplace(corr, sg)
        if mode == "intensity":
            surf = inten
        else:
            surf = (
                np.minimum(dt_seed, np.float32(d * DT_SAT))
                / np.float32(d * DT_SAT)
                * np.clip(inten, 0, None)
            )
            surf = ndi.gaussian_filter(surf, max(0.3, d * DT_SMOOTH))
    size = max(3, int(round(MIN_DIST * d)) | 1)
    peaks = (surf >= ndi.maximum_filter(surf, size=size)) & inside
    markers, nm = ndi.label(peaks, structure=np.ones((3, 3)))
    if nm == 0:
        return lab
    # Only components holding two or more seeds need a watershed; the others keep their own id
    # (this halves the work on typical images).
    seeds_per = np.bincount(lab[peaks], minlength=lab.max() + 1)
    multi = seeds_per >= 2
    multi[0] = False
    clump = multi[lab]
    out = np.where(clump, 0, lab + nm).astype(np.int32)
    out[~mask] = 0
    if clump.any():
        rows, cols = np.flatnonzero(clump.any(axis=1)), np.flatnonzero(clump.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub_mask = clump[y0:y1, x0:x1]
        sub_markers = np.where(sub_mask, markers[y0:y1, x0:x1], 0)
        sub_surf = surf[y0:y1, x0:x1]
        ws = np.zeros(sub_mask.shape, np.int32)
        ws[sub_mask] = _ascend(sub_surf, sub_markers, sub_mask)
        if MERGE_H > 0:
            peak = np.zeros(nm + 1, np.float32)
            peak[markers[peaks]] = surf[peaks]
            py, px = np.nonzero(peaks)
            ml = markers[py, px]
            cnt = np.maximum(np.bincount(ml, minlength=nm + 1), 1)
            pos = (
                np.stack([np.bincount(ml, py, nm + 1), np.bincount(ml, px, nm + 1)], 1)
                / cnt[:, None]
            )
            ws = _merge_shallow(ws, sub_surf, peak, pos, MERGE_H, MERGE_DIST * d)
        out[y0:y1, x0:x1][sub_mask] = ws[sub_mask]
    return out


def _merge_shallow(
    lab: np.ndarray, surf: np.ndarray, peak: np.ndarray, pos: np.ndarray, h: float, dist: float
) -> np.ndarray:
    """Merge neighbouring basins whose pass (highest boundary point) is within ``h`` x the lower
    peak of that peak and whose seeds (``pos``, row/col per label) are closer than ``dist``: a dip
    that shallow between seeds that close is texture, not the contact between two nuclei."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ka, kb, sad = [], [], []
    for a, b, sa, sb in (
        (lab[:, :-1], lab[:, 1:], surf[:, :-1], surf[:, 1:]),
        (lab[:-1], lab[1:], surf[:-1], surf[1:]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        la, lb = a[m], b[m]
        ka.append(np.minimum(la, lb))
        kb.append(np.maximum(la, lb))
        sad.append(np.minimum(sa[m], sb[m]))
    ka, kb, sad = np.concatenate(ka), np.concatenate(kb), np.concatenate(sad)
    if ka.size == 0:
        return lab
    n = peak.size
    key = ka.astype(np.int64) * n + kb
    order = np.lexsort((sad, key))
    key, sad = key[order], sad[order]
    last = np.r_[key[1:] != key[:-1], True]
    key, sad = key[last], sad[last]  # highest pass between each pair
    ka, kb = key // n, key % n
    low = np.minimum(peak[ka], peak[kb])
    join = (sad >= (1 - h) * low) & (low > 0)
    join &= ((pos[ka] - pos[kb]) ** 2).sum(1) < dist * dist
    if not join.any():
        return lab
    g = coo_matrix((np.ones(join.sum()), (ka[join], kb[join])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    # map each label to the smallest label of its component
    first = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    remap = first[comp].astype(np.int32)
    remap[0] = 0
    return remap[lab]


def _ascend(surf: np.ndarray, markers: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Watershed basins by steepest ascent: the marker each ``region`` pixel reaches by always
    stepping to its highest 8-neighbour (pointer jumping, ~3x faster than a flooding watershed;
    basins agree on ~96 % of pixels, the rest are boundary pixels). Basins of unmarked maxima
    take the label of a labelled neighbour. Returns the labels of the region's pixels (C order).
    """
    h, w = surf.shape
    W = w + 2
    s = np.full((h + 2, W), -np.inf, np.float32)
    np.copyto(s[1:-1, 1:-1], surf, where=region)
    best = s[1:-1, 1:-1].copy()
    off = np.zeros((h, w), np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                v = s[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
                b = v > best
                np.copyto(best, v, where=b)
                np.copyto(off, dy * W + dx, where=b)
    del s, best
    mk = np.zeros((h + 2, W), np.int32)
    mk[1:-1, 1:-1] = markers
    mk = mk.ravel()
    rp = np.flatnonzero(np.pad(region, 1))  # region pixels, padded flat indices
    parent = np.arange(mk.size, dtype=np.int32)
    parent[rp] = rp + off[region]
    seeds = np.flatnonzero(mk)
    parent[seeds] = seeds
    p = parent[rp]
    for _ in range(64):  # pointer jumping: path lengths double each round
        q = parent[p]
        if np.array_equal(q, p):
            break
        parent[rp] = q
        p = q
    lab = mk[p]
    todo = np.flatnonzero(lab == 0)
    if todo.size:  # basins of unmarked maxima: grow labelled neighbours into them
        full = np.zeros(mk.size, np.int32)
        full[rp] = lab
        nbr = np.array([dy * W + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
        idx = rp[todo]
        for _ in range(4 * (h + w)):
            got = full[idx[:, None] + nbr].max(axis=1)
            full[idx] = got
            left = got == 0
            if not left.any() or left.all():
                break
            idx = idx[left]
        lab = full[rp]
    return lab


def _size_filter(lab: np.ndarray, min_area: float, max_area: float | None) -> np.ndarray:
    areas = np.bincount(lab.ravel())
    bad = areas < min_area
    if max_area is not None:
        bad |= areas > max_area
    bad[0] = False
    if bad.any():
        lab = np.where(bad[lab], 0, lab)
    return lab
