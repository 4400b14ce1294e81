"""Annotation costs: exemplars from image A used on images B..Z, and clicks propagated through z/t.

    HF_HUB_OFFLINE=1 python benchmarks/bench_propagation.py --part exemplars      # full size
    HF_HUB_OFFLINE=1 python benchmarks/bench_propagation.py --part propagation --frames 3
    HF_HUB_OFFLINE=1 python benchmarks/bench_propagation.py --tiny                # both, tiny

Full size = bench_speed.py's random-weight checkpoint with the ``facebook/sam3`` architecture
(built in ``--checkpoint`` if missing, ~3.4 GB). Speed does not depend on weight values.

exemplars: per target image, the cost of `engine.segment_with` (A's exemplar tokens on B) next
to the ordinary exemplar call on B and a text prompt on B, all on B's cached features, plus the
one-off encode of A and the geometry encoder run once on A.
propagation: `core.tracking.click_tracking` seconds per slice, first with no slice cached (each
slice encoded by the backbone once) and then again with every slice in the engine's feature
cache (the second pass over the same stack, e.g. after a correction click).
Prints markdown tables; ``--out FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402,F401


def _engine(args):
    from napari_sam3.core.sam3.engine import Sam3Engine

    if args.tiny:
        from napari_sam3.testing import tiny_checkpoint_dir

        return Sam3Engine.load(str(tiny_checkpoint_dir(video=True)), device="cpu")
    folder = Path(args.checkpoint)
    if not (folder / ".complete").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_speed import build_full_checkpoint

        build_full_checkpoint(folder)
    return Sam3Engine.load(str(folder), device="cpu")


def _timed(fn, *a, **k):
    start = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - start


def exemplar_rows(engine, size: int, targets: int) -> list[str]:
    from napari_sam3.core.synthetic import synthetic_nuclei

    image_a, labels_a = synthetic_nuclei((size, size), seed=0)[:2]
    ys, xs = np.nonzero(labels_a == 1)
    box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    _, encode_a = _timed(engine.encode, image_a)
    prompt, geometry = _timed(engine.exemplar_prompt, image_a, box)
    rows = [
        "| step | seconds |",
        "|---|---|",
        f"| encode image A (once) | {encode_a:.2f} |",
        f"| exemplar tokens on A (geometry encoder, once) | {geometry:.3f} |",
    ]
    steps = {
        "A's exemplars on B (segment_with)": lambda img: engine.segment_with(img, prompt),
        "same coordinates on B": lambda img: engine.segment_exemplars(img, box),
        "text prompt on B": lambda img: engine.segment_text(img, "nucleus"),
    }
    per = {"encode B": [], **{name: [] for name in steps}}
    names = list(steps)
    for i in range(targets):
        image_b = synthetic_nuclei((size, size), seed=100 + i)[0]
        per["encode B"].append(_timed(engine.encode, image_b)[1])
        for name in names[i % 3 :] + names[: i % 3]:  # rotate: no step always runs first
            per[name].append(_timed(steps[name], image_b)[1])
    for name, values in per.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        rows.append(f"| per target: {name} | {np.median(values):.2f} (median; each: {each}) |")
    return rows


def propagation_rows(engine, size: int, frames: int) -> list[str]:
    from napari_sam3.core.synthetic import synthetic_nuclei
    from napari_sam3.core.tracking.click_tracking import ObjectPrompt, track_objects

    stack = np.stack([synthetic_nuclei((size, size), seed=i)[0] for i in range(frames)])
    start = frames // 2
    obj = ObjectPrompt(obj_id=1, frame=start, points_xy=[[size / 2, size / 2]], point_labels=[1])
    engine.clear_cache()
    engine.reset_stats()
    cold, cold_s = _timed(track_objects, engine, stack, [obj])
    cold_encodes = engine.stats["vision_encodes"]
    engine.reset_stats()
    warm, warm_s = _timed(track_objects, engine, stack, [obj])
    warm_encodes = engine.stats["vision_encodes"]
    same = bool(np.array_equal(cold.labels, warm.labels))
    return [
        "| pass | slices | backbone encodes | seconds | seconds / slice |",
        "|---|---|---|---|---|",
        f"| no slice cached | {frames} | {cold_encodes} | {cold_s:.2f} | {cold_s / frames:.2f} |",
        f"| every slice cached | {frames} | {warm_encodes} | {warm_s:.2f} | {warm_s / frames:.2f} |",
        f"| labels identical both passes | {same} | | | |",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("exemplars", "propagation", "all"), default="all")
    p.add_argument("--tiny", action="store_true", help="the tiny random video checkpoint")
    p.add_argument(
        "--checkpoint", default=os.path.join(tempfile.gettempdir(), "napari-sam3-full-random")
    )
    p.add_argument("--size", type=int, default=256, help="plane side in pixels")
    p.add_argument("--targets", type=int, default=3, help="target images for --part exemplars")
    p.add_argument("--frames", type=int, default=3, help="slices for --part propagation")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    engine = _engine(args)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    bf16 = (
        "avx512_bf16" in Path("/proc/cpuinfo").read_text()
        if Path("/proc/cpuinfo").exists()
        else False
    )
    head = [
        f"model: {'tiny random' if args.tiny else 'full-size SAM3 architecture, random weights'}; "
        f"cpu: {cpu} x{torch.get_num_threads()} threads, avx512_bf16={bf16}; "
        f"CPU fast path: {engine.cpu_fast_path}; plane {args.size} px (model input "
        f"{engine.image_size} px); load average {os.getloadavg()[0]:.1f}",
        "",
    ]
    out = head
    if args.part in ("exemplars", "all"):
        out += ["### Exemplars from image A on other images", ""]
        out += exemplar_rows(engine, args.size, args.targets) + [""]
    if args.part in ("propagation", "all"):
        out += ["### Clicks propagated through a stack", ""]
        out += propagation_rows(engine, args.size, args.frames) + [""]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
