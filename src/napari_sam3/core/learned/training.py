"""The one training loop of the nucleus network: from scratch (training/train_nucleus_net.py) and
fine-tuning on a user's labels (`finetune`).

Planes are prepared as at inference (`scaling.normalise`, then resized so nuclei are
CANONICAL_DIAMETER px across, at a few scales around it); random CROP px crops with flips and
quarter turns and `augment.photometric`; loss: binary cross-entropy on the foreground plus twice
that on the centredness map (`targets.centredness`); AdamW with a one-cycle learning rate.
A fine-tune may be anchored to its starting weights (L2-SP, ``anchor``).
`iter_train` yields `TrainProgress` (step, loss, time left) so a run is cancelled between steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from napari_sam3.core.learned.augment import photometric
from napari_sam3.core.learned.network import CANONICAL_DIAMETER, NucleusNet
from napari_sam3.core.learned.scaling import normalise, resize
from napari_sam3.core.learned.targets import centredness
from napari_sam3.core.progress import Progress, ProgressGen

__all__ = [
    "CROP",
    "SCALES",
    "TrainPlane",
    "TrainProgress",
    "iter_train",
    "prepare_plane",
]

CROP = 128  # network-scale px per training crop
# our diameter estimate is within ~25 % of the truth, so the network learns that range of scales
SCALES = (0.75, 0.9, 1.0, 1.15, 1.33)


@dataclass
class TrainPlane:
    source: str  # set / image name
    name: str  # file [plane] x scale
    image: np.ndarray  # float32, normalised, at the network's scale
    foreground: np.ndarray  # uint8
    centre: np.ndarray  # float32 0..1


@dataclass(frozen=True)
class TrainProgress(Progress):
    """A training step: ``loss`` (running mean) and ``seconds_left`` (estimate; NaN early on)."""

    loss: float = float("nan")
    seconds_left: float = float("nan")


def prepare_plane(
    source: str,
    name: str,
    img: np.ndarray,
    lab: np.ndarray,
    diameter: float,
    scales: Sequence[float] = SCALES,
) -> list[TrainPlane]:
    """One labelled plane as the network sees it, at each of ``scales`` x CANONICAL_DIAMETER.
    The plane is normalised at its own resolution, as at inference."""
    out = []
    norm = normalise(img)
    lab = np.asarray(lab)
    for j in scales:
        f = CANONICAL_DIAMETER * j / diameter
        shape = (max(32, round(img.shape[0] * f)), max(32, round(img.shape[1] * f)))
        x = resize(norm, shape).numpy()
        lb = resize(lab.astype(np.float32), shape, labels=True).numpy().astype(np.int32)
        fg = (lb > 0).astype(np.uint8)
        out.append(TrainPlane(source, f"{name} x{j}", x, fg, centredness(lb)))
    return out


def crop(plane: TrainPlane, rng: np.random.Generator, size: int = CROP) -> np.ndarray:
    """(3, size, size): augmented image, foreground, centredness of one random crop."""
    h, w = plane.image.shape
    arrays = [plane.image, plane.foreground.astype(np.float32), plane.centre]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        arrays = [np.pad(a, ((0, ph), (0, pw))) for a in arrays]
        h, w = arrays[0].shape
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    out = [a[y : y + size, x : x + size] for a in arrays]
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = [np.rot90(a[:, ::-1] if flip else a, k) for a in out]
    img = photometric(out[0], rng)
    return np.stack([img.astype(np.float32), out[1].copy(), out[2].copy()])


def batch(by_source: dict[str, list[TrainPlane]], rng: np.random.Generator, n: int):
    """``n`` crops, each from a random source (so every source weighs the same), then a random
    plane of it; returns (image, foreground, centredness) tensors (n, 1, CROP, CROP)."""
    sources = list(by_source)
    items = []
    for _ in range(n):
        ps = by_source[sources[rng.integers(len(sources))]]
        items.append(crop(ps[rng.integers(len(ps))], rng))
    b = torch.from_numpy(np.stack(items))
    return b[:, :1], b[:, 1:2], b[:, 2:3]


def loss_of(out: torch.Tensor, fg: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        out[:, :1], fg
    ) + 2 * F.binary_cross_entropy_with_logits(out[:, 1:2], ce)


def iter_train(
    net: NucleusNet,
    planes: Sequence[TrainPlane],
    steps: int,
    *,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    pct_start: float = 0.05,
    label: str = "Training",
    on_step: Callable[[int, NucleusNet, float], None] | None = None,
    anchor: float = 0.0,
) -> ProgressGen[float]:
    """Train ``net`` in place for ``steps`` steps; yields `TrainProgress` after every step
    (cancel there); returns the final running loss. ``on_step(step, net, loss)`` after each
    step (checkpoints of the from-scratch script). ``anchor`` > 0 adds
    ``anchor * sum ||w - w_start||^2`` over the parameters to the loss (L2-SP): a fine-tune on
    few labels stays near what the network knew. The reported loss is the data term alone."""
    if not planes:
        raise ValueError("no training planes")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[TrainPlane]] = {}
    for p in planes:
        by_source.setdefault(p.source, []).append(p)
    from napari_sam3.core.sam3.triton_isolation import isolate_triton

    isolate_triton()  # AdamW imports torch._dynamo -> triton: must not crash beside Qt's Mesa
    net.train()
    start = [p.detach().clone() for p in net.parameters()] if anchor > 0 else []
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(steps, 2), pct_start=pct_start
    )
    t0 = time.perf_counter()
    running: list[float] = []
    yield TrainProgress(f"{label}: step 0/{steps}", 0, steps)
    for step in range(1, steps + 1):
        x, fg, ce = batch(by_source, rng, batch_size)
        loss = loss_of(net(x), fg, ce)
        total = loss
        if start:
            drift = sum(
                ((p - p0) ** 2).sum() for p, p0 in zip(net.parameters(), start, strict=True)
            )
            total = loss + anchor * drift
        opt.zero_grad()
        total.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        mean = float(np.mean(running[-50:]))
        per_step = (time.perf_counter() - t0) / step
        left = per_step * (steps - step) if step >= 3 else float("nan")
        if on_step is not None:
            on_step(step, net, mean)
        yield TrainProgress(
            f"{label}: step {step}/{steps}, loss {mean:.3f}, {_left_text(left)}",
            step,
            steps,
            loss=mean,
            seconds_left=left,
        )
    net.eval()
    return float(np.mean(running[-200:])) if running else float("nan")


def _left_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"
