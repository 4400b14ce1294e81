"""Is there anything to count in this plane, at what scale? Shared by both counters without SAM3.

Hot pixels out, constant planes, polarity, the not-fluorescence check and the diameter estimate:
the classical counter (`pipeline`) and the nucleus network (`core.learned.pipeline`) both start
here, so they agree on when to say "nothing to count" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sam3.core.classical.diameter import estimate_plane_diameter
from napari_sam3.core.classical.foreground import detect_polarity, foreground, to_unit_range
from napari_sam3.core.classical.intensity import pixel_noise, remove_hot_pixels, to_intensity
from napari_sam3.core.classical.resolution import (
    block_mean,
    upsample,
    upsample_factor,
    work_factor,
)
from napari_sam3.core.classical.suitability import (
    FORCED_NOT_FLUORESCENCE,
    NOT_FLUORESCENCE,
    NOTHING_ABOVE_NOISE,
    looks_transmitted,
)
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress, ProgressGen

__all__ = ["ScreenedPlane", "WorkingForeground", "screen_plane", "working_foreground"]


@dataclass
class ScreenedPlane:
    img: np.ndarray  # float intensity plane, hot pixels replaced
    noise: float  # pixel noise sigma of img
    polarity: str  # "bright" or "dark" (detected when "auto")
    diameter: float  # given or estimated; NaN when nothing is to be counted
    estimated: float | None  # the estimate, when none was given
    warnings: list[str] = field(default_factory=list)
    nothing: bool = False  # True: count nothing, the warnings say why


def screen_plane(
    image: np.ndarray,
    diameter: float | None,
    *,
    channel: int | None = None,
    polarity: str = "auto",
    label: str = "Count",
    total: int = 4,
) -> ProgressGen[ScreenedPlane]:
    """Yields `Progress` (steps 0-1 of ``total``), returns a `ScreenedPlane`."""
    img = to_intensity(image, channel)
    warnings: list[str] = []
    yield Progress(f"{label}: reading the image", 0, total)
    if diameter is None or diameter > 2:  # objects of 1-2 px would look like hot pixels
        img, n_hot = remove_hot_pixels(img)
        if n_hot:
            warnings.append(
                f"Ignored {n_hot} hot pixels (single pixels far above their neighbours)."
            )
    d0 = float(diameter) if diameter is not None else float("nan")
    if float(img.max()) <= float(img.min()):
        warnings.append("The image is constant; no objects can be found.")
        return ScreenedPlane(img, 0.0, "bright", d0, None, warnings, True)
    noise = pixel_noise(img)
    if polarity == "auto":
        polarity = detect_polarity(to_unit_range(img))
        if looks_transmitted(img if polarity == "bright" else -img, noise):
            warnings.append(NOT_FLUORESCENCE)
            return ScreenedPlane(img, noise, polarity, d0, None, warnings, True)
    else:  # forced: count as asked, but keep what the same check would have said
        seen = detect_polarity(to_unit_range(img))
        if looks_transmitted(img if seen == "bright" else -img, noise):
            warnings.append(FORCED_NOT_FLUORESCENCE)
    estimated = None
    if diameter is None:
        yield Progress(f"{label}: estimating the object diameter", 1, total)
        estimated = estimate_plane_diameter(img, polarity, noise)
        if not np.isfinite(estimated):
            warnings.append(NOTHING_ABOVE_NOISE)
            return ScreenedPlane(img, noise, polarity, float("nan"), None, warnings, True)
        diameter = estimated
    diameter = float(diameter)
    if not diameter > 0:
        raise Sam3Error(f"The diameter must be a positive number of pixels, got {diameter}.")
    return ScreenedPlane(img, noise, polarity, diameter, estimated, warnings)


@dataclass
class WorkingForeground:
    """The classical foreground at the working resolution (objects ~10-20 px across)."""

    small: np.ndarray  # the plane at the working resolution
    f: int  # block size (working pixels are f x f image pixels)
    up: int  # or upsampling factor for small objects (then f == 1)
    d_small: float  # the diameter at the working resolution
    corr: np.ndarray  # normalised, background-corrected, smoothed plane
    mask: np.ndarray  # above the threshold AND the 5-sigma noise floor
    polarity: str
    threshold: float


def working_foreground(
    plane: ScreenedPlane, threshold: str | float = "li", background: bool = True
) -> WorkingForeground:
    """What clears the noise floor at the plane's scale; an empty ``mask`` means nothing to count
    (the classical counter segments from it; the nucleus network only takes that answer)."""
    img, diameter = plane.img, plane.diameter
    f = work_factor(diameter, img.size)
    up = upsample_factor(diameter, img.size)
    small = block_mean(img, f) if up == 1 else upsample(img, up)
    d_small = diameter / f * up
    noise_small = plane.noise / f if up == 1 else plane.noise  # block mean of f x f: sigma / f
    corr, mask, polarity, t = foreground(
        small, d_small, plane.polarity, threshold, background, noise_small, float(up)
    )
    return WorkingForeground(small, f, up, d_small, corr, mask, polarity, t)
