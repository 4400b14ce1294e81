"""Train the shipped nucleus network (src/napari_sam3/core/learned/nucleus_net.safetensors).

    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py            # ~25 min on 2 CPU cores
    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py --steps 200 --out /tmp/net.safetensors

    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py --leave-out hela \
        --out benchmarks/_out/loso/hela.safetensors     # a row of bench_real.py's headline

Data: `dataset.build()` (the "train" side of every labelled source + synthetic planes; sources
and licences in training/DATA.md). Random 128 px crops, flips and quarter turns, then
`core.learned.augment.photometric` (dim nuclei, speckle, saturation, blur, gradients, few photons,
8-bit; ``--narrow-augment``: the older contrast / gamma / noise / blur recipe). Loss: binary cross-entropy on the
foreground and on the centredness map. The file's metadata records the widths, the scale, the
steps and where every training plane came from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402

from napari_sam3.core.learned.augment import photometric  # noqa: E402
from napari_sam3.core.learned.model_file import SHIPPED, WIDTHS  # noqa: E402
from napari_sam3.core.learned.network import CANONICAL_DIAMETER, NucleusNet  # noqa: E402

CROP = 128


def crop(plane: dataset.Plane, rng: np.random.Generator, wide: bool = True):
    h, w = plane.image.shape
    arrays = [plane.image, plane.foreground.astype(np.float32), plane.centre]
    if h < CROP or w < CROP:
        ph, pw = max(0, CROP - h), max(0, CROP - w)
        arrays = [np.pad(a, ((0, ph), (0, pw))) for a in arrays]
        h, w = arrays[0].shape
    y, x = rng.integers(0, h - CROP + 1), rng.integers(0, w - CROP + 1)
    out = [a[y : y + CROP, x : x + CROP] for a in arrays]
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = [np.rot90(a[:, ::-1] if flip else a, k) for a in out]
    img = photometric(out[0], rng, wide=wide)
    return np.stack([img.astype(np.float32), out[1].copy(), out[2].copy()])


def batch(planes_by_source, rng, n, wide: bool = True):
    sources = list(planes_by_source)
    items = []
    for _ in range(n):
        ps = planes_by_source[sources[rng.integers(len(sources))]]
        items.append(crop(ps[rng.integers(len(ps))], rng, wide))
    b = torch.from_numpy(np.stack(items))
    return b[:, :1], b[:, 1:2], b[:, 2:3]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=SHIPPED)
    ap.add_argument(
        "--leave-out",
        nargs="*",
        default=[],
        choices=list(dataset.REAL_SETS),
        help="train without these real sets (for the leave-one-set-out check; use with --out)",
    )
    ap.add_argument(
        "--synthetic-only", action="store_true", help="no real planes (a smoke test of the script)"
    )
    ap.add_argument(
        "--narrow-augment",
        action="store_true",
        help="the augmentations before issue 18 (to compare recipes at equal steps)",
    )
    ap.add_argument("--checkpoints", type=Path, default=Path(__file__).parent / "_out")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    planes = dataset.build(real=not a.synthetic_only, leave_out=tuple(a.leave_out))
    by_source: dict[str, list] = {}
    for p in planes:
        by_source.setdefault(p.source, []).append(p)
    print(
        f"{len(planes)} planes ({ {k: len(v) for k, v in by_source.items()} }) in {time.time() - t0:.0f} s",
        flush=True,
    )
    net = NucleusNet(WIDTHS)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=a.lr, total_steps=max(a.steps, 2), pct_start=0.05
    )
    a.checkpoints.mkdir(parents=True, exist_ok=True)
    running = []
    for step in range(1, a.steps + 1):
        x, fg, ce = batch(by_source, rng, a.batch, not a.narrow_augment)
        out = net(x)
        loss = F.binary_cross_entropy_with_logits(
            out[:, :1], fg
        ) + 2 * F.binary_cross_entropy_with_logits(out[:, 1:2], ce)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % 50 == 0:
            print(
                f"step {step} loss {np.mean(running[-50:]):.4f} {time.time() - t0:.0f} s",
                flush=True,
            )
        if step % 500 == 0 or step == a.steps:
            meta = {
                "widths": json.dumps(list(WIDTHS)),
                "canonical_diameter": str(CANONICAL_DIAMETER),
                "steps": str(step),
                "final_loss": f"{np.mean(running[-200:]):.4f}",
                "trained_on": json.dumps(
                    sorted({f"{p.source}: {p.name.rsplit(' x', 1)[0]}" for p in planes})
                ),
                "licences": json.dumps(dataset.LICENCES),
                "script": "training/train_nucleus_net.py",
                "left_out": json.dumps(a.leave_out),
                "augment": "narrow" if a.narrow_augment else "wide",
            }
            state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
            path = a.out if step == a.steps else a.checkpoints / f"step{step}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file(state, str(tmp), metadata=meta)
            tmp.chmod(0o644)  # readable by everyone who installs the package
            tmp.replace(path)
    print(f"saved {a.out} after {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
