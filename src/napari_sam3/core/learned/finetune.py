"""Fine-tune the nucleus network on a user's own labels: better counts on their microscope.

    result = finetune([(name, image, labels), ...])
    result.f1_before, result.f1_after, result.better, result.net, result.meta
    io.network_file.save_network(result.net, "my_net.safetensors", result.meta)
    count_objects(image, net="my_net.safetensors")

Labels are instance ids (0 background) on 2-D planes: a corrected count, a reviewed SAM3 result,
or hand-painted. The nuclei's diameter comes from the labels; planes are prepared exactly as the
shipped network's training prepares them (`training.prepare_plane`) and trained by the same loop
(`training.iter_train`), starting from a base network. Part of the labels is held out
automatically (the last plane of >= 2, else the bottom quarter of a single plane) and F1 at IoU
0.5 (`core.results.measure.match_labels`) is measured there before and after: a network that does
not beat its base says so (``better`` False) and must not be selected.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sam3.core.classical.intensity import to_intensity
from napari_sam3.core.defaults import FINETUNE_BATCH, FINETUNE_LR, FINETUNE_STEPS
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.learned.model_file import SHIPPED, file_sha256, load_trainable
from napari_sam3.core.learned.pipeline import iter_segment_learned, median_diameter
from napari_sam3.core.learned.training import SCALES, iter_train, prepare_plane
from napari_sam3.core.progress import Progress, ProgressGen, run_to_end

__all__ = ["FinetuneResult", "LabelledPlane", "check_pairs", "finetune", "iter_finetune"]

HOLD_OUT_FRACTION = 0.25  # of a single plane's rows, when only one plane is given


@dataclass
class LabelledPlane:
    name: str
    image: np.ndarray
    labels: np.ndarray


@dataclass
class FinetuneResult:
    net: object  # the fine-tuned `NucleusNet` (eval mode)
    f1_before: float  # base network on the held-out labels
    f1_after: float  # fine-tuned network on the same labels
    better: bool  # after > before: use the new network; otherwise keep the base
    held_out: str  # what was held out
    steps: int
    seconds: float
    diameter: float  # median nucleus diameter of the labels, px
    meta: dict = field(default_factory=dict)  # provenance, for the weights file
    path: Path | None = None  # set by whoever saves it

    @property
    def summary(self) -> str:
        line = f"F1 on held-out labels: {self.f1_before:.3f} -> {self.f1_after:.3f}"
        if self.better:
            return f"{line}; the new network is better."
        return f"{line}; the new network is NOT better than its base: keep counting with the base."


def check_pairs(pairs: Sequence) -> list[LabelledPlane]:
    """(name, image, labels) triples or LabelledPlane s, checked: 2-D planes of one shape with at
    least one object each. `Sam3Error` naming the fix otherwise."""
    out = []
    if not pairs:
        raise Sam3Error("No labelled images: give at least one image with its labels.")
    for k, p in enumerate(pairs):
        name, img, lab = (p.name, p.image, p.labels) if isinstance(p, LabelledPlane) else p
        name = str(name or f"image {k + 1}")
        img = to_intensity(np.asarray(img))
        lab = np.asarray(lab)
        if lab.ndim != 2 or img.shape != lab.shape:
            raise Sam3Error(
                f"{name}: the labels have shape {lab.shape} but the image plane {img.shape}; "
                f"give the labels drawn on this image (same height and width)."
            )
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.mod(lab, 1) == 0):
                raise Sam3Error(f"{name}: labels must be whole-number object ids (0 background).")
            lab = lab.astype(np.int64)
        if not lab.any():
            raise Sam3Error(
                f"{name}: the labels are empty (all 0); paint or correct the objects first, or "
                f"leave this image out."
            )
        out.append(LabelledPlane(name, img, lab.astype(np.int32, copy=False)))
    return out


def _polarity(img: np.ndarray, lab: np.ndarray) -> str:
    """Objects brighter or darker than their surroundings: read from the labels themselves."""
    return "bright" if img[lab > 0].mean() >= img[lab == 0].mean() else "dark"


def _split(planes: list[LabelledPlane]) -> tuple[list[LabelledPlane], list[LabelledPlane], str]:
    """(train, held out, description)."""
    if len(planes) >= 2:
        return planes[:-1], planes[-1:], f"{planes[-1].name} (1 of {len(planes)} planes)"
    p = planes[0]
    cut = int(round(p.image.shape[0] * (1 - HOLD_OUT_FRACTION)))
    train = LabelledPlane(p.name, p.image[:cut], p.labels[:cut])
    held = LabelledPlane(p.name, p.image[cut:], p.labels[cut:])
    return [train], [held], f"the bottom {HOLD_OUT_FRACTION:.0%} of {p.name}"


def _f1(net, planes: list[LabelledPlane], polarity: str) -> ProgressGen[float]:
    from napari_sam3.core.results.measure import match_labels

    tp = fp = fn = 0
    for p in planes:
        res = yield from iter_segment_learned(p.image, None, polarity=polarity, net=net)
        m = match_labels(p.labels, res.labels)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def finetune(pairs, **kwargs) -> FinetuneResult:
    """Synchronous `iter_finetune`."""
    return run_to_end(iter_finetune(pairs, **kwargs))


def iter_finetune(
    pairs: Sequence,
    *,
    base: str | Path | None = None,
    steps: int = FINETUNE_STEPS,
    lr: float = FINETUNE_LR,
    batch_size: int = FINETUNE_BATCH,
    seed: int = 0,
) -> ProgressGen[FinetuneResult]:
    """Fine-tune ``base`` (a network file; None: the shipped one) on ``pairs`` ((name, image,
    labels) triples). Yields `Progress` (training steps with loss and time left); returns a
    `FinetuneResult` (save it with `io.network_file.save_network`; check the file name before,
    `io.network_file.check_network_out`). Every input is checked before training starts."""
    t0 = time.perf_counter()
    if steps < 1:
        raise Sam3Error(f"The number of training steps must be at least 1, got {steps}.")
    planes = check_pairs(pairs)
    base_path = Path(base) if base else SHIPPED
    net, base_meta = load_trainable(base_path)
    polarity = _polarity(planes[0].image, planes[0].labels)
    train, held, held_text = _split(planes)
    yield Progress("Preparing the labelled planes", 0, None)
    prepared = []
    for p in train:
        d = median_diameter(p.labels)
        img = p.image if polarity == "bright" else -p.image
        prepared += prepare_plane(p.name, p.name, img, p.labels, d, SCALES)
    diameter = float(np.median([median_diameter(p.labels) for p in planes]))
    yield Progress("Scoring the base network on the held-out labels", 0, None)
    base_eval = copy.deepcopy(net).eval()
    before = yield from _f1(base_eval, held, polarity)
    gen = iter_train(
        net,
        prepared,
        steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        pct_start=0.1,
        label="Fine-tuning",
    )
    loss = yield from gen
    yield Progress("Scoring the new network on the held-out labels", steps, steps)
    after = yield from _f1(net.eval(), held, polarity)
    meta = {
        "script": "napari_sam3.core.learned.finetune",
        "base_network": base_path.name if base_path == SHIPPED else str(base_path),
        "base_sha256": file_sha256(base_path),
        "base_trained_on": base_meta.get("trained_on", "[]"),
        "images": [p.name for p in planes],
        "label_sha256": [
            hashlib.sha256(np.ascontiguousarray(p.labels)).hexdigest() for p in planes
        ],
        "objects": int(sum(len(np.unique(p.labels)) - 1 for p in planes)),
        "held_out": held_text,
        "polarity": polarity,
        "diameter_px": round(diameter, 2),
        "steps": str(steps),
        "lr": str(lr),
        "final_loss": f"{loss:.4f}",
        "f1_before": f"{before:.4f}",
        "f1_after": f"{after:.4f}",
        "better_than_base": json_bool(after > before),
    }
    seconds = time.perf_counter() - t0
    return FinetuneResult(
        net, before, after, after > before, held_text, steps, seconds, diameter, meta
    )


def json_bool(v: bool) -> str:
    return "true" if v else "false"
