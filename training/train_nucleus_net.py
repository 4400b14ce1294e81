"""Train the shipped nucleus network (src/napari_sam3/core/learned/nucleus_net.safetensors).

    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py            # ~25 min on 2 CPU cores
    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py --steps 200 --out /tmp/net.safetensors

    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py --leave-out hela \
        --out benchmarks/_out/loso/hela.safetensors     # a row of bench_real.py's headline

Data: `dataset.build()` (the "train" side of every labelled source + synthetic planes; sources
and licences in training/DATA.md). Random 128 px crops, flips and quarter turns, then
`core.learned.augment.photometric` (dim nuclei, speckle, saturation, blur, gradients, few photons,
8-bit). Loss: binary cross-entropy on the
foreground and on the centredness map. The file's metadata records the widths, the scale, the
steps and where every training plane came from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402

from napari_sam3.core.learned.model_file import SHIPPED, WIDTHS  # noqa: E402
from napari_sam3.core.learned.network import NucleusNet  # noqa: E402
from napari_sam3.core.learned.training import iter_train  # noqa: E402
from napari_sam3.core.progress import run_to_end  # noqa: E402
from napari_sam3.io.network_file import save_network  # noqa: E402


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
    ap.add_argument("--checkpoints", type=Path, default=Path(__file__).parent / "_out")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
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
    a.checkpoints.mkdir(parents=True, exist_ok=True)

    def checkpoint(step, net, loss):
        if step % 50 == 0:
            print(f"step {step} loss {loss:.4f} {time.time() - t0:.0f} s", flush=True)
        if step % 500 == 0 or step == a.steps:
            meta = {
                "steps": str(step),
                "final_loss": f"{loss:.4f}",
                "trained_on": sorted({f"{p.source}: {p.name.rsplit(' x', 1)[0]}" for p in planes}),
                "licences": dataset.LICENCES,
                "script": "training/train_nucleus_net.py",
                "left_out": a.leave_out,
                "augment": "wide",
            }
            path = a.out if step == a.steps else a.checkpoints / f"step{step}.safetensors"
            save_network(net, path, meta, overwrite=True)
            net.train()

    run_to_end(
        iter_train(
            net, planes, a.steps, lr=a.lr, batch_size=a.batch, seed=a.seed, on_step=checkpoint
        )
    )
    print(f"saved {a.out} after {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
