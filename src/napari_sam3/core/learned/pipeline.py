"""Count nuclei with the shipped nucleus network (no download, CPU seconds); classical screening.

1. the same screening as the classical counter (`core.classical.screening`): hot pixels, constant
   and non-fluorescent planes, polarity, and the diameter estimate when none is given;
2. the plane normalised and resized so nuclei are CANONICAL_DIAMETER px (`scaling`);
3. the network's foreground and centredness maps, in tiles on large planes (`predict`);
4. one object per high-centredness core, outlines from the foreground map at full size
   (`instances`); size filter and border removal as in the classical counter.

Trained by training/train_nucleus_net.py on the "train" images of benchmarks/real_sets.py and
synthetic planes; accuracy on images it never saw: benchmarks/results_real.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sam3.core.classical.screening import screen_plane, working_foreground
from napari_sam3.core.classical.suitability import NOTHING_ABOVE_NOISE
from napari_sam3.core.learned.instances import full_size_labels, instances
from napari_sam3.core.learned.model_file import load_network
from napari_sam3.core.learned.network import CANONICAL_DIAMETER
from napari_sam3.core.learned.predict import predict_maps
from napari_sam3.core.learned.scaling import normalise, scale_for
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end

__all__ = ["LearnedResult", "iter_segment_learned", "segment_learned"]

MIN_AREA_FRACTION = 0.15  # default smallest object: 15 % of the expected area (as classical)


@dataclass
class LearnedResult:
    labels: np.ndarray  # full-size label image, sequential ids
    diameter: float  # diameter used (given or estimated), full-resolution pixels
    estimated_diameter: float | None
    polarity: str
    factor: float  # resize factor image -> network scale
    warnings: list[str] = field(default_factory=list)


def segment_learned(image: np.ndarray, diameter: float | None = None, **kwargs) -> LearnedResult:
    """Synchronous `iter_segment_learned` (same arguments)."""
    return run_to_end(iter_segment_learned(image, diameter, **kwargs))


def iter_segment_learned(
    image: np.ndarray,
    diameter: float | None = None,
    *,
    channel: int | None = None,
    polarity: str = "auto",
    min_size: float | None = None,
    max_size: float | None = None,
    exclude_border: bool = False,
) -> ProgressGen[LearnedResult]:
    """Segment nuclei; yields `Progress`, returns a `LearnedResult` (arguments as the classical
    `iter_segment_classical`: diameter in pixels, estimated when None; sizes in image pixels)."""
    total = 4
    plane = yield from screen_plane(
        image, diameter, channel=channel, polarity=polarity, label="Nucleus model", total=total
    )
    img = plane.img
    if plane.nothing:
        d = float(diameter) if diameter is not None else float("nan")
        return LearnedResult(np.zeros(img.shape, np.int32), d, None, "bright", 1.0, plane.warnings)
    yield Progress("Nucleus model: finding nuclei", 2, total)
    if not working_foreground(plane).mask.any():  # the classical counter's 5-sigma noise floor
        d = float(diameter) if diameter is not None else float("nan")
        warnings = [*plane.warnings, NOTHING_ABOVE_NOISE]
        return LearnedResult(np.zeros(img.shape, np.int32), d, None, "bright", 1.0, warnings)
    net, _ = load_network()
    factor = scale_for(plane.diameter)
    norm = normalise(img if plane.polarity == "bright" else -img)
    fg, centre = predict_maps(net, norm, factor)
    yield Progress("Nucleus model: separating touching nuclei", 3, total)
    expected = np.pi * (CANONICAL_DIAMETER / 2) ** 2
    net_px = factor**2  # network-scale pixels per image pixel
    min_area = MIN_AREA_FRACTION * expected if min_size is None else float(min_size) * net_px
    lab = instances(fg, centre, min_area)
    labels = full_size_labels(lab, fg, img.shape)
    if max_size is not None:
        areas = np.bincount(labels.ravel())
        big = areas > float(max_size)
        big[0] = False
        if big.any():
            labels[big[labels]] = 0
    if exclude_border:
        from skimage.segmentation import clear_border

        labels = clear_border(labels)
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(labels)[0].astype(np.int32, copy=False)
    return LearnedResult(
        labels, plane.diameter, plane.estimated, plane.polarity, factor, plane.warnings
    )
