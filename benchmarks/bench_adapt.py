"""Cost and effect of adapting SAM3 to a user's labels (core.sam3.adapt); prints a markdown table.

    nice python benchmarks/bench_adapt.py --full --steps 3       # full-size step time, CPU
    python benchmarks/bench_adapt.py --tiny                      # tiny-model before -> after F1
    python benchmarks/bench_adapt.py --full --device cuda        # GPU (benchmarks/gpu.sh)

``--full``: the full-size SAM3 detector (``Sam3Config()`` defaults: 840M parameters) with random
weights, built in memory (speed does not depend on weight values). One 1008-px synthetic nuclei
image is encoded once (the cached features every step reuses, as in `core.sam3.adapt`), then
``--steps`` adaptation steps (forward of the DETR encoder/decoder + mask head with the adapter,
matching loss, backward into the adapter, AdamW) are timed in float32 and under bfloat16 autocast
(``core.sam3.acceleration.heads_autocast``, the CPU fast path), after one warm-up step each.
Memory: peak resident set (CPU) or peak CUDA allocation after each phase.

``--tiny``: the tiny random checkpoint of the tests: held-out F1@0.5 / mean IoU before -> after
`iter_adapt` on synthetic nuclei (8 images, 2 held out), for 1 and 2 nuclei per image.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

GIB = 1024**3


def peak_memory(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_rows(args) -> list[str]:
    from transformers import Sam3Config, Sam3Model
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from napari_sam3.core.images import to_model_rgb
    from napari_sam3.core.sam3.acceleration import encode_vision
    from napari_sam3.core.sam3.adapt import train_item, train_step
    from napari_sam3.core.sam3.adapter import Sam3Adapter, adapted_layers
    from napari_sam3.core.synthetic import synthetic_nuclei

    device = torch.device(args.device)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    detector = Sam3Model(Sam3Config()).eval().to(device)
    for p in detector.parameters():
        p.requires_grad_(False)
    build = time.perf_counter() - t0
    print(f"built the full-size detector in {build:.0f} s", file=sys.stderr)

    plane, labels = synthetic_nuclei((1008, 1008), seed=0, diameter=40.0)
    rgb = to_model_rgb(plane)
    pixel = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
    t0 = time.perf_counter()
    with torch.inference_mode():
        mode = "bf16" if device.type == "cpu" else "off"
        vision = encode_vision(detector, pixel, mode)
        ids = torch.randint(0, 256, (1, 32), device=device)
        mask = torch.ones(1, 32, dtype=torch.long, device=device)
        text = detector.get_text_features(input_ids=ids, attention_mask=mask)
    sync(device)
    encode = time.perf_counter() - t0
    print(f"encoded once in {encode:.0f} s", file=sys.stderr)
    vision.hidden_states = None
    text_embeds = BaseModelOutputWithPooling(pooler_output=text.pooler_output.clone())
    item = train_item(vision, labels)
    n_obj = item.targets.n
    mem_base = peak_memory(device)

    adapter = Sam3Adapter.new(detector, args.rank).requires_grad_(True)
    n_params = sum(t.numel() for t in adapter.parameters())
    optim = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    rows = []
    modes = [("bfloat16 autocast", torch.bfloat16), ("float32", None)]
    if device.type == "cuda":
        modes = [("bfloat16 autocast", torch.bfloat16)]
    for name, dtype in modes:
        ctx = (
            (lambda d=dtype: torch.autocast(device.type, dtype=d))
            if dtype is not None
            else contextlib.nullcontext
        )
        times = []
        for i in range(args.steps + 1):
            sync(device)
            t = time.perf_counter()
            loss = train_step(detector, adapter, optim, item, text_embeds, mask, ctx())
            sync(device)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - t)
            print(
                f"{name} step {i}: {time.perf_counter() - t:.2f} s loss {loss:.2f}", file=sys.stderr
            )
        fwd = []
        for _ in range(2):  # the same forward without gradients: what inference costs
            sync(device)
            t = time.perf_counter()
            with torch.inference_mode(), ctx():
                detector(vision_embeds=item.vision, text_embeds=text_embeds, attention_mask=mask)
            sync(device)
            fwd.append(time.perf_counter() - t)
        rows.append(
            f"| detector forward without adapter (inference), {name} | {min(fwd):.2f} s (min of 2) | |"
        )
        rows.append(
            f"| adaptation step, {name} | {np.median(times):.2f} s "
            f"(min {min(times):.2f}, {len(times)} steps) | {peak_memory(device):.1f} GiB |"
        )
    header = [
        f"Full-size SAM3 detector, random weights, {device} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}, {platform.processor()}",
        f"Adapter: rank {args.rank} on {len(adapted_layers(detector))} layers, "
        f"{n_params / 1e6:.2f} M trainable parameters; one 1008-px image, {n_obj} objects.",
        "",
        "| step | time | peak memory so far |",
        "|---|---|---|",
        f"| build detector (once) | {build:.0f} s | |",
        f"| image + text features (once per image, bf16 vision on CPU) | {encode:.0f} s | "
        f"{mem_base:.1f} GiB |",
    ]
    return header + rows


def tiny_rows(args) -> list[str]:
    from napari_sam3.core.progress import run_to_end
    from napari_sam3.core.sam3.adapt import AdaptExample, AdaptSettings, iter_adapt
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.synthetic import synthetic_nuclei
    from napari_sam3.testing import tiny_checkpoint_dir

    engine = Sam3Engine.load(str(tiny_checkpoint_dir()), device="cpu")
    rows = [
        "Tiny random checkpoint (tests), 8 synthetic 224 px images, 2 held out, rank 8, "
        f"{args.tiny_steps} steps:",
        "",
        "| nuclei per image | held-out F1@0.5 before -> after | mean IoU before -> after | "
        "selected | time per step |",
        "|---|---|---|---|---|",
    ]
    for per_image, diameter in ((1, 80.0), (2, 70.0)):
        torch.manual_seed(0)
        examples = []
        for i in range(8):
            img, lab = synthetic_nuclei(
                (224, 224), n=per_image, seed=i, diameter=diameter, touching=0
            )
            examples.append(AdaptExample(f"img{i}", img, lab))
        settings = AdaptSettings("nucleus", steps=args.tiny_steps)
        r = run_to_end(iter_adapt(engine, examples, settings))
        rows.append(
            f"| {per_image} | {r.before['f1']:.2f} -> {r.after['f1']:.2f} | "
            f"{r.before['mean_iou']:.2f} -> {r.after['mean_iou']:.2f} | {r.selected} | "
            f"{r.step_seconds * 1000:.0f} ms |"
        )
        engine.clear_cache()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full-size step time and memory")
    parser.add_argument("--tiny", action="store_true", help="tiny-model before -> after F1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (full)")
    parser.add_argument("--tiny-steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = []
    if args.tiny:
        lines += tiny_rows(args) + [""]
    if args.full:
        lines += full_rows(args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
