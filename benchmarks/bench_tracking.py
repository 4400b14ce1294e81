"""Tracking through a stack (core.stack_tracking): seconds per frame, float32 vs the CPU fast path.

    HF_HUB_OFFLINE=1 python benchmarks/bench_tracking.py                      # full-size random
    HF_HUB_OFFLINE=1 python benchmarks/bench_tracking.py --checkpoint DIR --frames 4 --size 512

Two engines on the same checkpoint, one with ``NAPARI_SAM3_CPU_FAST=off`` (plain float32) and one
with ``bf16`` (each frame's video-model pass under bfloat16 autocast), run the same synthetic
stack one after the other (A, B, A, B with ``--reps 2``) and print a markdown table with seconds
per frame, tracks found and how much of the label stack agrees. Random weights find few or no
tracks; speed does not depend on the weight values. Needs ~2x the model's memory (two engines).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        default=os.path.join(tempfile.gettempdir(), "napari-sam3-full-random"),
        help="checkpoint folder (default: bench_speed.py's full-size random one, built if missing)",
    )
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--size", type=int, default=256, help="frame side in pixels")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--min-score", type=float, default=None)
    args = p.parse_args(argv)

    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.sam3.loading import load_model
    from napari_sam3.core.synthetic import synthetic_nuclei
    from napari_sam3.core.tracking.stack_tracking import track_stack

    folder = Path(args.checkpoint)
    if not (folder / "config.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_speed import build_full_checkpoint

        build_full_checkpoint(folder)
    size = (args.size, args.size)
    stack = np.stack([synthetic_nuclei(size, seed=i)[0] for i in range(args.frames)])
    engines = {}
    for mode in ("off", "bf16"):
        os.environ["NAPARI_SAM3_CPU_FAST"] = mode
        engines[mode] = Sam3Engine(load_model(str(folder), device="cpu"))
    times: dict[str, list[float]] = {m: [] for m in engines}
    results = {}
    for _ in range(args.reps):
        for mode, engine in engines.items():
            start = time.perf_counter()
            results[mode] = track_stack(engine, stack, "nucleus", min_score=args.min_score)
            times[mode].append((time.perf_counter() - start) / args.frames)
    ref = results["off"].labels > 0
    print(
        f"{folder.name}, {args.frames} frames of {args.size} px, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.reps} run(s) each, interleaved.\n"
    )
    print("| mode | s / frame (median) | vs float32 | tracks | foreground agreement |")
    print("|---|---|---|---|---|")
    base = float(np.median(times["off"]))
    for mode, result in results.items():
        med = float(np.median(times[mode]))
        agree = float(((result.labels > 0) == ref).mean())
        print(f"| {mode} | {med:.2f} | {med / base:.2f}x | {result.n_tracks} | {agree:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
