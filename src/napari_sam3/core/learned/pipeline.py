"""Count nuclei with the shipped nucleus network (no download, CPU seconds); classical screening.

1. the same screening as the classical counter (`core.classical.screening`): hot pixels, constant
   and non-fluorescent planes, polarity, and the diameter estimate when none is given;
2. the plane normalised and resized so nuclei are CANONICAL_DIAMETER px (`scaling`);
3. the network's foreground and centredness maps, in tiles on large planes (`predict`);
4. one object per high-centredness core, outlines from the foreground map at full size
   (`instances`); size filter and border removal as in the classical counter;
5. an estimated diameter is checked against the nuclei found: when their median is more than
   1.25x away, steps 3-4 run again at their diameter (at most twice).

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
from napari_sam3.core.learned.network import CANONICAL_DIAMETER, NucleusNet
from napari_sam3.core.learned.predict import iter_predict_maps
from napari_sam3.core.learned.scaling import normalise, scale_for
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end

__all__ = [
    "LearnedResult",
    "iter_segment_learned",
    "median_diameter",
    "segment_learned",
    "stack_diameter",
]

MIN_AREA_FRACTION = 0.15  # default smallest object: 15 % of the expected area (as classical)
# The network was trained on nuclei at 0.75-1.33 x its scale (the range of our estimate's error);
# found nuclei outside 1.25 x the estimate mean it was seen at the wrong scale: look again.
SCALE_TOLERANCE = 1.25
MAX_REFINE = 2


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
    check_diameter: bool | None = None,
    net=None,
) -> ProgressGen[LearnedResult]:
    """Segment nuclei; yields `Progress`, returns a `LearnedResult` (arguments as the classical
    `iter_segment_classical`: diameter in pixels, estimated when None; sizes in image pixels).

    ``check_diameter``: compare the diameter with the nuclei found and look again at theirs when
    far off (step 5); default only for an estimated diameter, True also for a given one (what
    `stack_diameter` does with a stack's estimate). ``net``: a network file (your own
    fine-tuned one, `finetune`), a `NucleusNet`, or None for the shipped one."""
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
    net = resolve_network(net)
    norm = normalise(img if plane.polarity == "bright" else -img)
    used = plane.diameter
    check = plane.estimated is not None if check_diameter is None else check_diameter
    last = MAX_REFINE if check else 0
    for attempt in range(last + 1):
        factor = scale_for(used)
        fg, centre = yield from iter_predict_maps(net, norm, factor)
        yield Progress("Nucleus model: separating touching nuclei", 3, total)
        expected = np.pi * (CANONICAL_DIAMETER / 2) ** 2
        net_px = factor**2  # network-scale pixels per image pixel
        min_area = MIN_AREA_FRACTION * expected if min_size is None else float(min_size) * net_px
        lab = instances(fg, centre, min_area)
        found = median_diameter(lab) / factor
        # an ESTIMATED diameter is checked against the nuclei the network found: when they are
        # far from it, the network saw them at a scale it was not trained for; look again at
        # theirs (a diameter the user gave is used as given)
        if attempt == last or not np.isfinite(found) or _within(found / used):
            break
        used = found
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
    return LearnedResult(labels, used, plane.estimated, plane.polarity, factor, plane.warnings)


def resolve_network(net=None) -> NucleusNet:
    """A `NucleusNet` from a file path, a network, or None (the shipped one / the env var)."""
    if isinstance(net, NucleusNet):
        return net
    return load_network(net)[0]


def stack_diameter(plane: np.ndarray, estimate: float, polarity: str = "auto", net=None) -> float:
    """A stack's estimated diameter checked by the network on one of its planes (step 5 of the
    plane pipeline, once for the whole stack so its planes still share one scale)."""
    res = segment_learned(plane, estimate, polarity=polarity, check_diameter=True, net=net)
    return res.diameter if res.labels.any() and np.isfinite(res.diameter) else estimate


def median_diameter(lab: np.ndarray) -> float:
    """Median equivalent diameter of the objects of a label image (NaN when none)."""
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else float("nan")


def _within(ratio: float) -> bool:
    return 1 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE
