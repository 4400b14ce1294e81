"""Classical nucleus/cell segmentation for counting: no weights, seconds on a laptop.

Pipeline (every step scaled to the object diameter, estimated when not given by `diameter`):

1. one intensity plane (RGB -> mean of the colour channels, or a chosen channel; NaN -> median);
   single-pixel spikes (hot / saturated camera pixels) replaced by their neighbours' median; the
   pixel noise from neighbour differences (`intensity`);
2. is there anything to count? A plane where almost no pixel is near its background floor is
   not fluorescence (phase contrast, transmitted light): nothing is counted and the warning names
   the fix, unless the user set the polarity (`suitability`);
3. a working resolution where objects are ~10-20 px across: block mean for big objects, 2x
   bilinear upsampling for objects < 9 px (`resolution`);
4. robust percentile normalisation and automatic polarity; background / uneven-illumination
   correction; Gaussian smoothing scaled to the diameter; automatic threshold (Li by default, or
   Otsu) AND a noise floor: foreground must clear the background by 5 sigma of the smoothed
   camera noise, so empty and noise-only planes give nothing (`foreground`);
5. touching objects split by a seeded watershed (steepest ascent, pointer jumping); seeds are
   peaks of (distance transform of a stricter mask x smoothed intensity, plus a -LoG blob term for
   objects < 9 px), at least half a diameter apart; neighbouring basins with seeds < d/2 apart and
   a dip < 1 % of the lower peak between them are merged again (`split`, `seeds`, `watershed`);
6. each object's edge at half the height of its interior (the edge of a blurred plateau), not at
   the global threshold, which takes in the blur halo (`edges`);
7. size filter, optional removal of objects touching the border, sequential ids, back to full size
   (here).

Accuracy on real labelled microscopy: benchmarks/bench_real.py (results_real.md); the synthetic
scenarios: benchmarks/bench_counting.py. Only numpy / scipy.ndimage / scikit-image are used; what
is written here is the wiring and the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_sam3.core.classical.diameter import estimate_diameter
from napari_sam3.core.classical.edges import fit_edges
from napari_sam3.core.classical.intensity import contrast_to_noise, to_intensity
from napari_sam3.core.classical.resolution import (
    labels_from_upsampled,
    upsample_labels,
)
from napari_sam3.core.classical.screening import screen_plane, working_foreground
from napari_sam3.core.classical.seeds import SPLIT_MODES
from napari_sam3.core.classical.split import split_touching
from napari_sam3.core.classical.suitability import NOTHING_ABOVE_NOISE
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end

__all__ = [
    "ClassicalResult",
    "estimate_diameter",
    "iter_segment_classical",
    "segment_classical",
    "to_intensity",
]


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
    total = 4
    plane = yield from screen_plane(
        image, diameter, channel=channel, polarity=polarity, label="Classical count", total=total
    )
    img, warnings, estimated = plane.img, plane.warnings, plane.estimated
    if plane.nothing:
        return _nothing(img, diameter, warnings)
    diameter = plane.diameter
    yield Progress("Classical count: background, smoothing, threshold", 2, total)
    work = working_foreground(plane, threshold, background)
    small, f, up, d_small = work.small, work.f, work.up, work.d_small
    corr, mask, polarity_used, t = work.corr, work.mask, work.polarity, work.threshold
    if not mask.any():
        warnings.append(NOTHING_ABOVE_NOISE)
        return _nothing(img, diameter, warnings, estimated)
    snr = contrast_to_noise(img, small, mask)
    if snr < 1.5:
        warnings.append(
            f"The objects barely stand out from the noise (contrast {snr:.1f}x the noise); the "
            "count is unreliable. Check the channel, or give the diameter."
        )

    area_px = np.pi * (d_small / 2) ** 2
    # sizes are given in image pixels; the working grid is f times smaller or up times larger
    min_small = (0.15 * area_px) if min_size is None else float(min_size) / f**2 * up**2
    lab, n = ndi.label(mask)
    mode = split if isinstance(split, str) else "shape+intensity"
    if mode not in SPLIT_MODES:
        raise Sam3Error(f"Unknown split mode {split!r}; use True, False or one of {SPLIT_MODES}.")
    if n and split and d_small >= 3:
        yield Progress("Classical count: splitting touching objects", 3, total)
        lab = split_touching(mask, lab, d_small, corr, mode, blob=up > 1)
    lab = fit_edges(lab, corr, d_small)
    max_small = None if max_size is None else float(max_size) / f**2 * up**2
    lab = _size_filter(lab, min_small, max_small)
    if exclude_border:
        from skimage.segmentation import clear_border

        lab = clear_border(lab)  # same objects as at full size: the last row/col covers the edge
    from skimage.segmentation import relabel_sequential

    if up > 1:  # back to the image grid
        lab = labels_from_upsampled(lab, up, img.shape)
    lab = relabel_sequential(lab)[0].astype(np.int32, copy=False)
    labels = upsample_labels(lab, f, img.shape)
    return ClassicalResult(labels, diameter, estimated, polarity_used, t, f, warnings, lab)


def _nothing(
    img: np.ndarray, diameter: float | None, warnings: list[str], estimated: float | None = None
) -> ClassicalResult:
    """The result of a plane with nothing to count (the warnings say why)."""
    d = float(diameter) if diameter is not None else float("nan")
    empty = np.zeros(img.shape, np.int32)
    return ClassicalResult(empty, d, estimated, "bright", float("nan"), 1, warnings)


def _size_filter(lab: np.ndarray, min_area: float, max_area: float | None) -> np.ndarray:
    areas = np.bincount(lab.ravel())
    bad = areas < min_area
    if max_area is not None:
        bad |= areas > max_area
    bad[0] = False
    if bad.any():
        lab = np.where(bad[lab], 0, lab)
    return lab
