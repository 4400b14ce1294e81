"""Speed of the napari-sam3 engine against plain transformers, step by step; prints a markdown table.

    HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py --tiny              # seconds (smoke test)
    HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py --full              # full-size random weights
    HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py --full --sizes all  # every size (long on CPU)
    HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py --full --encoder-study  # CPU fast-path modes
    HF_HUB_OFFLINE=1 python benchmarks/bench_speed.py --full --heads-study    # bf16 detector heads
    python benchmarks/bench_speed.py --full --device cuda --dtype bf16    # GPU (see gpu.sh)
    python benchmarks/bench_speed.py --checkpoint /path/to/sam3 ...       # a real checkpoint folder

``--full`` builds (once, cached in ``--full-dir``) a checkpoint folder with the ``facebook/sam3``
layout and the full-size architecture (``Sam3VideoConfig()`` defaults) with random weights, and
loads it through the real loader. Speed does not depend on weight values; the masks are meaningless.

Each step is run for ours (``Sam3Engine``) and for the documented transformers calls on the same
checkpoint, one after the other in this process (A, B, A, B...), and the ratio ours / plain is
reported. The machine may be shared: compare ratios, not absolute times across runs.

Steps, per image size (an H x W synthetic 16-bit nuclei image; the model always sees 1008 px):
  encode            ours: engine.encode(plane) (normalise, resize, backbone, cache)
                    plain: Sam3Processor(images=rgb) + Sam3Model.get_vision_features
  first concept     text encode + detector + masks at image size (plain: processor(text) + model(
                    vision_embeds=...) + post_process_instance_segmentation)
  further concept   the same with another, new concept on the same image
  repeat concept    a concept asked before (ours: cached text features)
  ... realistic count  further new concepts with a threshold keeping ~25 candidates (random
                    weights pass all 200 queries, so the rows above upsample 200 masks)
  tracker embeddings ours: from the SAME backbone pass (tracker neck only); plain: Sam3TrackerModel
                    has its own backbone copy, a second backbone pass
  click             one positive click on the cached image (ours first click includes the
                    tracker neck; "click (next)" is a further click)
  label image+table Candidates.to_label_image() + Candidates.table() (plain: no equivalent)
  classical count   core.counting.count_objects(plane) (no model)
  per tile (WxH-tiled) ours: the real tiled SAM3 count (iter_count, 1008-px tiles) timed between
                    its per-tile reports, and the engine's encode time of the tile; plain: encode +
                    concept of the same crop. A summary prints encode and encode + first concept
                    ratios of the plain image and of a tile side by side.
  peak memory       a fresh subprocess: load, encode, concept, click (ru_maxrss / CUDA peak)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before anything that could start Qt)

HERE = Path(__file__).resolve().parent
ALL_SIZES = ["640x480", "1024x768", "1200x800", "2048x2048-tiled"]
FULL_DEFAULT_SIZES = ["1024x768", "2048x2048-tiled"]
TILE = 1008  # tile side for the 2048 x 2048 case (one model input per tile)
TILE_OVERLAP = 64
CONCEPTS = ["nucleus", "cell", "mitotic figure"]
REALISTIC = 25  # candidates a real image gives per concept (random weights pass all 200)
REALISTIC_CONCEPTS = ["nuclear envelope", "apoptotic body"]
MIN_SCORE = 0.1
GIB = 1024**3


# ------------------------------------------------------------------------------ checkpoints
def build_full_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A full-size SAM3 checkpoint folder (facebook/sam3 layout) with random weights.

    ``Sam3VideoConfig()`` defaults (detector 840M + tracker parameters, ~3.4 GB of float32
    safetensors), the default 1008-px ``Sam3ImageProcessor`` and the byte-level CLIP tokenizer of
    ``napari_sam3.testing``. Reused when ``path`` already holds one.
    """
    from transformers import (
        CLIPTokenizer,
        Sam3ImageProcessor,
        Sam3Processor,
        Sam3VideoConfig,
        Sam3VideoModel,
    )

    from napari_sam3.testing import _write_weights, tiny_vocab

    path = Path(path)
    done = path / ".complete"
    if done.exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    if len(tokenizer) != len(tiny_vocab()):
        tokenizer = CLIPTokenizer(vocab=tiny_vocab(), merges=[])
    Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer).save_pretrained(path)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Sam3VideoModel(Sam3VideoConfig()).eval()
        model.config.save_pretrained(path)
        # the model's own state_dict keys, like the published checkpoint (see testing.py)
        _write_weights(model, path / "model.safetensors")
        del model
    finally:
        torch.random.set_rng_state(state)
    done.write_text("ok\n")
    return path


def checkpoint_for(args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    if args.tiny:
        from napari_sam3.testing import tiny_checkpoint_dir

        return tiny_checkpoint_dir()
    return build_full_checkpoint(args.full_dir)


# ------------------------------------------------------------------------------ helpers
def parse_dtype(name: str | None):
    if name is None:
        return None
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    return table[name.lower()]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(self.device)
        return time.perf_counter() - start, out


@dataclass
class Row:
    size: str
    step: str
    ours: float | None = None  # seconds
    plain: float | None = None
    note: str = ""
    samples: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.plain:
            return None
        return self.ours / self.plain


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 1.0:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def image(size: tuple[int, int], seed: int) -> np.ndarray:
    from napari_sam3.core.synthetic import synthetic_nuclei

    img, _ = synthetic_nuclei(size, seed=seed)
    return img


# ------------------------------------------------------------------------------ plain transformers
class Plain:
    """The documented transformers usage on the same checkpoint (own models, own backbone copies)."""

    def __init__(self, folder: Path, device, dtype):
        from transformers import Sam3Model, Sam3Processor, Sam3TrackerModel, Sam3TrackerProcessor

        self.device, self.dtype = torch.device(device), dtype
        self.detector = Sam3Model.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        self.processor = Sam3Processor.from_pretrained(str(folder))
        self.tracker = Sam3TrackerModel.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        self.tracker_processor = Sam3TrackerProcessor.from_pretrained(str(folder))

    @torch.inference_mode()
    def encode(self, rgb):
        inputs = self.processor(images=rgb, return_tensors="pt")
        pv = inputs["pixel_values"].to(self.device, self.dtype)
        return self.detector.get_vision_features(pixel_values=pv)

    @torch.inference_mode()
    def concept(self, vision, text, shape, threshold=MIN_SCORE):
        t = self.processor(text=text, return_tensors="pt")
        out = self.detector(
            vision_embeds=vision,
            input_ids=t["input_ids"].to(self.device),
            attention_mask=t["attention_mask"].to(self.device),
        )
        res = self.processor.post_process_instance_segmentation(
            out, threshold=threshold, mask_threshold=0.5, target_sizes=[tuple(shape)]
        )[0]
        return res["masks"].cpu().numpy()

    @torch.inference_mode()
    def tracker_embeddings(self, rgb):
        """Second backbone pass (the tracker's own copy), prepared as in the SAM3 predictor."""
        inputs = self.tracker_processor(images=rgb, return_tensors="pt")
        pv = inputs["pixel_values"].to(self.device, self.dtype)
        feats = list(self.tracker.get_image_features(pv, return_dict=True).fpn_hidden_states)[:3]
        feats[-1] = feats[-1] + self.tracker.no_memory_embedding
        return [
            f.permute(1, 2, 0).reshape(1, -1, *s)
            for f, s in zip(feats, self.tracker.backbone_feature_sizes, strict=True)
        ]

    @torch.inference_mode()
    def click(self, embeddings, point_xy, shape):
        inputs = self.tracker_processor(
            input_points=[[[list(point_xy)]]],
            input_labels=[[[1]]],
            original_sizes=[list(shape)],
            return_tensors="pt",
        )
        out = self.tracker(
            image_embeddings=embeddings,
            input_points=inputs["input_points"].to(self.device),  # float32, as the processor gives
            input_labels=inputs["input_labels"].to(self.device),
            multimask_output=True,
        )
        masks = self.tracker_processor.post_process_masks(
            out.pred_masks.float().cpu(), [list(shape)]
        )
        return masks[0][0].numpy()


# ------------------------------------------------------------------------------ the suite
def parse_size(text: str) -> tuple[int, int, bool]:
    tiled = text.endswith("-tiled")
    w, h = text.removesuffix("-tiled").split("x")
    return int(h), int(w), tiled


def run_suite(args, folder: Path) -> tuple[list[Row], dict]:
    from napari_sam3.core.counting.count import count_objects
    from napari_sam3.core.images import Preprocessing, to_model_rgb
    from napari_sam3.core.sam3 import acceleration
    from napari_sam3.core.sam3.engine import Sam3Engine

    device = args.device
    dtype = parse_dtype(args.dtype)
    timer = Timer(device)
    info: dict = {}
    t, engine = timer(Sam3Engine.load, str(folder), device=device, dtype=dtype)
    info["load_ours_s"] = t
    t, plain = timer(Plain, folder, device, engine.dtype)
    info["load_plain_s"] = t
    info["dtype"] = str(engine.dtype).replace("torch.", "")
    # what the engine's encode uses (engines without core.acceleration run plain float32)
    info["fast_path"] = getattr(engine, "cpu_fast_path", "none (engine not integrated)")
    pre = Preprocessing()
    rows: list[Row] = []

    if torch.device(device).type == "cuda" or args.warmup:  # kernels, allocator, cudnn autotune
        warm = image((480, 640), seed=99)
        engine.segment_text(warm, CONCEPTS[0])
        engine.segment_points(warm, [[320, 240]], [1])
        rgb = to_model_rgb(warm, pre)
        v = plain.encode(rgb)
        plain.concept(v, CONCEPTS[0], warm.shape)
        plain.click(plain.tracker_embeddings(rgb), (320, 240), warm.shape)
        engine.clear_cache()

    sizes = args.sizes
    for si, size_text in enumerate(sizes):
        h, w, tiled = parse_size(size_text)
        plane = image((h, w), seed=si)
        label = f"{w}x{h}" + (" tiled" if tiled else "")
        if tiled:
            rows.extend(tiled_rows(args, engine, plain, plane, label, timer, pre, acceleration))
            continue
        rgb = to_model_rgb(plane, pre)
        engine.clear_cache()
        before = dict(engine.stats)

        # encode: ours, plain (interleaved), and the encoder fast path on its own
        t_ours, encoded = timer(engine.encode, plane)
        t_plain, vision = timer(plain.encode, rgb)
        rows.append(Row(label, "image encode", t_ours, t_plain))
        mode = acceleration.resolve_mode(engine.device, args.fast_path)
        if args.fast_path_row and mode != "off":
            pv = engine.pixel_values(rgb)
            t_fast, _ = timer(_encode_fast, engine, pv, mode)
            rows.append(
                Row(
                    label,
                    f"image encode, encode_vision({mode})",
                    t_fast,
                    t_plain,
                    note="core.acceleration directly",
                )
            )

        # concepts on the cached image
        t_ours, cands = timer(engine.segment_text, plane, CONCEPTS[0], min_score=MIN_SCORE)
        t_plain, _ = timer(plain.concept, vision, CONCEPTS[0], (h, w))
        rows.append(
            Row(
                label,
                "first concept (cached image)",
                t_ours,
                t_plain,
                note=f"{len(cands)} candidates",
            )
        )
        further_o, further_p = [], []
        for concept in CONCEPTS[1:]:
            t_o, _ = timer(engine.segment_text, plane, concept, min_score=MIN_SCORE)
            t_p, _ = timer(plain.concept, vision, concept, (h, w))
            further_o.append(t_o)
            further_p.append(t_p)
        rows.append(
            Row(
                label,
                "each further concept",
                statistics.median(further_o),
                statistics.median(further_p),
                note=f"median of {len(further_o)}",
            )
        )
        t_ours, cands = timer(engine.segment_text, plane, CONCEPTS[0], min_score=MIN_SCORE)
        t_plain, _ = timer(plain.concept, vision, CONCEPTS[0], (h, w))
        rows.append(Row(label, "repeat concept (cached text)", t_ours, t_plain))

        # Random weights pass all 200 queries; real images give tens of objects. The same new
        # concepts with a threshold that keeps about REALISTIC of them (both sides).
        scores = np.sort(np.asarray(cands.scores))[::-1]
        thr = float(scores[min(REALISTIC, len(scores)) - 1]) if len(scores) else MIN_SCORE
        real_o, real_p, kept = [], [], []
        for concept in REALISTIC_CONCEPTS:
            t_o, got = timer(engine.segment_text, plane, concept, min_score=thr)
            t_p, _ = timer(plain.concept, vision, concept, (h, w), thr)
            real_o.append(t_o)
            real_p.append(t_p)
            kept.append(len(got))
        rows.append(
            Row(
                label,
                "each further concept, realistic count",
                statistics.median(real_o),
                statistics.median(real_p),
                note=f"median of {len(real_o)}; {'/'.join(map(str, kept))} candidates",
            )
        )

        # clicks: ours reuses the backbone pass; plain needs its tracker's own
        point = (w // 2, h // 2)
        t_plain_emb, emb = timer(plain.tracker_embeddings, rgb)
        rows.append(
            Row(
                label,
                "tracker image embeddings",
                None,
                t_plain_emb,
                note="ours: none (in first click); plain: 2nd backbone pass",
            )
        )
        t_ours, _ = timer(engine.segment_points, plane, [point], [1])
        t_plain, _ = timer(plain.click, emb, point, (h, w))
        rows.append(
            Row(
                label, "first click (cached image)", t_ours, t_plain, note="ours incl. tracker neck"
            )
        )
        clicks_o, clicks_p = [], []
        for k in range(3):
            p = (w // 3 + k * 7, h // 3 + k * 5)
            t_o, _ = timer(engine.segment_points, plane, [p], [1])
            t_p, _ = timer(plain.click, emb, p, (h, w))
            clicks_o.append(t_o)
            clicks_p.append(t_p)
        rows.append(
            Row(
                label,
                "click (next)",
                statistics.median(clicks_o),
                statistics.median(clicks_p),
                note="median of 3",
            )
        )
        passes = engine.stats["vision_encodes"] - before["vision_encodes"]
        rows.append(
            Row(label, "backbone passes for text + clicks", passes, 2.0, note="count, not seconds")
        )

        # host-side steps
        t_lab, _ = timer(lambda c=cands: (c.to_label_image(), c.table()))
        rows.append(
            Row(label, "masks -> label image + table", t_lab, None, note=f"{len(cands)} masks")
        )
        t_cnt, res = timer(count_objects, plane)
        rows.append(Row(label, "classical count", t_cnt, None, note=f"{res.count} objects"))
        del vision, emb, encoded
        gc.collect()
    return rows, info


def _encode_fast(engine, pixel_values, mode):
    from napari_sam3.core.sam3.acceleration import encode_vision

    with torch.inference_mode():
        return encode_vision(engine.model.detector_model, pixel_values, mode)


def tiled_rows(args, engine, plain, plane, label, timer, pre, acceleration) -> list[Row]:
    """Per tile of the REAL tiled SAM3 count (`core.counting.iter_count`, method "sam3") against
    plain transformers on the same crops: encode alone and encode + concept.

    Ours: the time between the count's per-tile progress reports (crop, encode, detector, the
    dense-tile check, objects of the tile) and the engine's own encode time of that tile. The count
    stops after ``--tiles`` tiles. Random weights pass all 200 queries, so the count's dense-tile
    rule would re-run each tile as four smaller ones: those further tiles are not run here.
    """
    from napari_sam3.core.counting.count import iter_count
    from napari_sam3.core.counting.tiling import tile_grid
    from napari_sam3.core.images import to_model_rgb

    tiles = tile_grid(plane.shape[:2], TILE, TILE_OVERLAP)
    n_run = max(1, min(len(tiles), args.tiles))
    engine.clear_cache()
    count = iter_count(
        plane, "sam3", prompt=CONCEPTS[0], engine=engine, tile=TILE, min_score=MIN_SCORE
    )
    enc_o, per_o, enc_p, per_p, encodes = [], [], [], [], []
    step = next(count)  # "tile 1/N" comes right before the first tile's work
    for t in tiles[:n_run]:
        if not step.message.startswith("SAM3 count: tile"):
            raise RuntimeError(f"unexpected count step {step.message!r}")
        before = engine.stats["vision_encodes"]
        sync(args.device)
        start = time.perf_counter()
        step = next(count)  # the tile's work, up to the next tile's report
        sync(args.device)
        per_o.append(time.perf_counter() - start)
        enc_o.append(engine.last_encode_seconds)
        encodes.append(engine.stats["vision_encodes"] - before)
        crop = np.ascontiguousarray(plane[t.slices])
        rgb = to_model_rgb(crop, pre)
        t_enc, vision = timer(plain.encode, rgb)
        t_con, _ = timer(plain.concept, vision, CONCEPTS[0], crop.shape)
        enc_p.append(t_enc)
        per_p.append(t_enc + t_con)
    count.close()
    po, pp = statistics.median(per_o), statistics.median(per_p)
    note = f"{len(tiles)} tiles of {TILE} px, overlap {TILE_OVERLAP}; ran {n_run}"
    if n_run < len(tiles):
        note += " (total = per tile x count)"
    return [
        Row(
            label,
            "per tile: encode",
            statistics.median(enc_o),
            statistics.median(enc_p),
            note=f"tiled count path (iter_count); backbone passes per tile: "
            f"{'/'.join(map(str, encodes))}",
        ),
        Row(label, "per tile: encode + concept", po, pp, note=note),
        Row(
            label,
            f"whole image ({len(tiles)} tiles)",
            po * len(tiles),
            pp * len(tiles),
            note="sum of tiles; stitching not included",
        ),
    ]


# ------------------------------------------------------------------------------ encoder study
def encoder_study(args, folder: Path) -> str:
    """Fast-path modes of the vision encoder, interleaved, with agreement against float32.

    Same detector weights for every mode; the heads always run in float32 on the features each
    mode produced. Prints one markdown table.
    """
    from transformers import Sam3Model, Sam3Processor

    from napari_sam3.core.images import Preprocessing, to_model_rgb
    from napari_sam3.core.sam3.acceleration import encode_vision

    modes = args.modes
    detector = Sam3Model.from_pretrained(str(folder)).eval()
    processor_ = Sam3Processor.from_pretrained(str(folder))
    plane = image((768, 1024), seed=0)
    pv = processor_(images=to_model_rgb(plane, Preprocessing()), return_tensors="pt")[
        "pixel_values"
    ]
    text = processor_(text="nucleus", return_tensors="pt")
    first, outs, times = {}, {}, {m: [] for m in modes}
    with torch.inference_mode():
        for m in modes:  # first call: includes compiling for bf16-compile
            t = time.perf_counter()
            vision = encode_vision(detector, pv, m)
            first[m] = time.perf_counter() - t
            outs[m] = (vision, detector(vision_embeds=vision, **text))
        for _ in range(args.reps):
            for m in modes:
                t = time.perf_counter()
                encode_vision(detector, pv, m)
                times[m].append(time.perf_counter() - t)

    ref_v, ref_o = outs[modes[0]]
    base = statistics.median(times[modes[0]])
    lines = [
        f"Vision encoder, {args.reps} interleaved runs per mode after a first call; reference "
        f"`{modes[0]}`; heads in float32. torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| mode | first call | median | vs reference | feature rel. error (max level) | "
        "mask logits rel. error | mask sign agreement | top-10 mask IoU | max score diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in modes:
        v, o = outs[m]
        feats = [v.last_hidden_state, *v.fpn_hidden_states]
        refs = [ref_v.last_hidden_state, *ref_v.fpn_hidden_states]
        fe = max(_rel(a, b) for a, b in zip(feats, refs, strict=True))
        ag = detector_agreement(o, ref_o)
        med = statistics.median(times[m])
        lines.append(
            f"| {m} | {fmt_seconds(first[m])} | {fmt_seconds(med)} | {med / base:.2f}x | "
            f"{fe * 100:.2f} % | {ag['logits'] * 100:.2f} % | {ag['sign'] * 100:.2f} % | "
            f"{ag['iou']:.4f} | {ag['score']:.1e} |"
        )
    return "\n".join(lines)


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def detector_agreement(out, ref) -> dict:
    """How close one detector output is to a reference output of the same query slots: mask
    logits relative error, mask sign agreement, mean mask IoU and same-set of the reference's
    top-10 queries, max score difference (score = sigmoid(logit) x sigmoid(presence))."""

    def score(o):
        return (o.pred_logits.float().sigmoid() * o.presence_logits.float().sigmoid())[0]

    ref_s, s = score(ref), score(out)
    top = ref_s.argsort(descending=True)[:10]
    pm, rpm = out.pred_masks[0].float() > 0, ref.pred_masks[0].float() > 0
    inter = (pm[top] & rpm[top]).flatten(1).sum(1).float()
    union = (pm[top] | rpm[top]).flatten(1).sum(1).float().clamp(min=1)
    return {
        "logits": _rel(out.pred_masks, ref.pred_masks),
        "sign": (pm == rpm).float().mean().item(),
        "iou": (inter / union).mean().item(),
        "top10_same": set(top.tolist()) == set(s.argsort(descending=True)[:10].tolist()),
        "score": (s - ref_s).abs().max().item(),
    }


# ------------------------------------------------------------------------------ heads study
def heads_study(args, folder: Path) -> str:
    """Detector heads (text encoder + DETR encoder/decoder + mask head) in float32 vs under
    bfloat16 autocast (`core.acceleration.heads_autocast`), interleaved, with agreement against
    float32 heads on float32 features. This is what every further concept on an image costs."""
    from transformers import Sam3Model, Sam3Processor

    from napari_sam3.core.images import Preprocessing, to_model_rgb
    from napari_sam3.core.sam3.acceleration import encode_vision, heads_autocast

    detector = Sam3Model.from_pretrained(str(folder)).eval()
    processor_ = Sam3Processor.from_pretrained(str(folder))
    plane = image((768, 1024), seed=0)
    pv = processor_(images=to_model_rgb(plane, Preprocessing()), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.inference_mode():
        features = {"float32": encode_vision(detector, pv, "off")}
        features["bf16"] = encode_vision(detector, pv, "bf16")
    # (name, features, heads mode): the reference, each change alone, and the engine default
    setups = [
        ("float32 heads, float32 features (reference)", "float32", "off"),
        ("float32 heads, bf16 features (`bf16-vision`)", "bf16", "off"),
        ("bf16 heads, float32 features", "float32", "bf16"),
        ("bf16 heads, bf16 features (`bf16`, engine default)", "bf16", "bf16"),
    ]
    concepts = ["nucleus", *REALISTIC_CONCEPTS]
    texts = [processor_(text=c, return_tensors="pt") for c in concepts]

    def heads(feats, mode, text):
        with torch.inference_mode(), heads_autocast("cpu", mode):
            return detector(vision_embeds=features[feats], **text)

    outs = {name: heads(f, m, texts[0]) for name, f, m in setups}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for _ in range(args.reps):
        for text in texts:
            for name, f, m in setups:
                t = time.perf_counter()
                heads(f, m, text)
                times[name].append(time.perf_counter() - t)
    ref_name = setups[0][0]
    base = statistics.median(times[ref_name])
    lines = [
        f"Detector heads on cached features (text encoder + DETR + mask head, model input size), "
        f"{args.reps} x {len(texts)} interleaved runs per setup; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| setup | median | vs reference | mask logits rel. error | mask sign agreement | "
        "top-10 mask IoU | top-10 queries same | max score diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in setups:
        ag = detector_agreement(outs[name], outs[ref_name])
        med = statistics.median(times[name])
        lines.append(
            f"| {name} | {fmt_seconds(med)} | {med / base:.2f}x | {ag['logits'] * 100:.2f} % | "
            f"{ag['sign'] * 100:.2f} % | {ag['iou']:.4f} | {'yes' if ag['top10_same'] else 'no'} | "
            f"{ag['score']:.1e} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ memory probe
def memory_probe(args) -> None:
    """Run in a fresh process: load, encode, one concept, one click; print peak memory as JSON."""
    import resource

    folder = Path(args.checkpoint)
    dtype = parse_dtype(args.dtype)
    plane = image((768, 1024), seed=0)
    if args.memory_probe == "ours":
        from napari_sam3.core.sam3.engine import Sam3Engine

        engine = Sam3Engine.load(str(folder), device=args.device, dtype=dtype)
        engine.segment_text(plane, CONCEPTS[0], min_score=MIN_SCORE)
        engine.segment_points(plane, [[512, 384]], [1])
    else:
        from napari_sam3.core.images import Preprocessing, to_model_rgb

        plain = Plain(folder, args.device, dtype or torch.float32)
        rgb = to_model_rgb(plane, Preprocessing())
        plain.concept(plain.encode(rgb), CONCEPTS[0], plane.shape)
        plain.click(plain.tracker_embeddings(rgb), (512, 384), plane.shape)
    out = {"rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.device(args.device).type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    print("MEMORY " + json.dumps(out))


def measure_memory(args, folder: Path, which: str) -> dict | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        which,
        "--checkpoint",
        str(folder),
        "--device",
        args.device,
    ]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    env = dict(os.environ)
    if args.fast_path:
        env["NAPARI_SAM3_CPU_FAST"] = args.fast_path
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[7:])
    sys.stderr.write(proc.stderr[-2000:])
    return None


# ------------------------------------------------------------------------------ report
def render(rows: list[Row], info: dict, memory: dict, args) -> str:
    lines = []
    lines.append(
        f"**{info['kind']}** checkpoint, device `{args.device}`, dtype `{info['dtype']}`, "
        f"engine CPU fast path `{info['fast_path']}`, torch {torch.__version__}, "
        f"{info['threads']} threads, {platform.processor() or platform.machine()}."
    )
    lines.append("")
    lines.append("| image | step | ours | plain transformers | ours / plain | note |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r.step.startswith("backbone passes"):
            ours, plain = f"{r.ours:.0f}", f"{r.plain:.0f}"
        else:
            ours, plain = fmt_seconds(r.ours), fmt_seconds(r.plain)
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(f"| {r.size} | {r.step} | {ours} | {plain} | {ratio} | {r.note} |")
    for which, m in memory.items():
        if m:
            txt = f"{m['rss_peak_bytes'] / GIB:.2f} GiB RSS"
            if "cuda_peak_bytes" in m:
                txt += f", {m['cuda_peak_bytes'] / GIB:.2f} GiB CUDA"
            lines.append(
                f"| 1024x768 | peak memory, {which} (load + text + click) | "
                f"{txt} | | | fresh process |"
            )
    lines.append("")
    lines.extend(side_by_side_lines(rows))
    lines.extend(goal_lines(rows, memory, info))
    return "\n".join(lines)


def side_by_side_lines(rows) -> list[str]:
    """The fast path's gain on a plain image and per tile of a tiled count, in one line each."""
    plain_sizes = [r.size for r in rows if "tiled" not in r.size]
    tiled_sizes = [r.size for r in rows if "tiled" in r.size]
    if not plain_sizes or not tiled_sizes:
        return []
    s, t = plain_sizes[0], tiled_sizes[0]
    enc, first = _find(rows, s, "image encode"), _find(rows, s, "first concept (cached image)")
    tile_enc, tile_all = (
        _find(rows, t, "per tile: encode"),
        _find(rows, t, "per tile: encode + concept"),
    )
    if not (enc and first and tile_enc and tile_all):
        return []
    both = (enc.ours + first.ours) / (enc.plain + first.plain)
    return [
        f"Ours / plain, plain image ({s}) | per tile ({t}, tiled count path):",
        f"- encode: {enc.ratio:.2f}x | {tile_enc.ratio:.2f}x",
        f"- encode + first concept: {both:.2f}x | {tile_all.ratio:.2f}x",
        "",
    ]


def _find(rows, size, step):
    for r in rows:
        if r.size == size and r.step == step:
            return r
    return None


def goal_lines(rows, memory, info) -> list[str]:
    out = ["Goals (first non-tiled size):"]
    sizes = [r.size for r in rows if "tiled" not in r.size]
    if not sizes:
        return []
    s = sizes[0]
    enc, first = _find(rows, s, "image encode"), _find(rows, s, "first concept (cached image)")
    further = _find(rows, s, "each further concept")
    repeat = _find(rows, s, "repeat concept (cached text)")
    nclick = _find(rows, s, "click (next)")
    fclick = _find(rows, s, "first click (cached image)")
    passes = _find(rows, s, "backbone passes for text + clicks")
    lab = _find(rows, s, "masks -> label image + table")

    def ok(flag):
        return "PASS" if flag else "FAIL"

    if repeat and further:
        worst = max(repeat.ratio or 0, further.ratio or 0)
        out.append(
            f"- concept on a cached image <= 1.05x plain: further {further.ratio:.2f}x, "
            f"repeat (cached text) {repeat.ratio:.2f}x -> {ok(worst <= 1.05)}"
        )
    if enc and first and further:
        gain = (enc.ours + first.ours) / further.ours
        out.append(
            f"- second concept >= 10x cheaper than encode + first concept: {gain:.1f}x -> "
            f"{ok(gain >= 10)} (every random-weight candidate kept)"
        )
    real = _find(rows, s, "each further concept, realistic count")
    if enc and real:
        gain = (enc.ours + real.ours) / real.ours
        out.append(
            f"- the same with a realistic candidate count ({real.note.split('; ')[-1]}), "
            f"(encode + concept) / concept: {gain:.1f}x -> {ok(gain >= 10)}"
        )
    if fclick and nclick:
        out.append(
            f"- click <= 150 ms end-to-end: first {fmt_seconds(fclick.ours)}, next "
            f"{fmt_seconds(nclick.ours)} -> {ok(max(fclick.ours, nclick.ours) <= 0.150)}"
        )
    if passes:
        out.append(
            f"- one backbone pass per image for text + clicks: {passes.ours:.0f} "
            f"(plain: 2) -> {ok(passes.ours == 1)}"
        )
    m = memory.get("ours")
    if m:
        out.append(
            f"- peak memory, both heads loaded, <= 5.5 GiB ({info['dtype']}): "
            f"{m['rss_peak_bytes'] / GIB:.2f} GiB -> {ok(m['rss_peak_bytes'] <= 5.5 * GIB)}"
            + ("" if info["kind"] == "full-size" else " (tiny model: not meaningful)")
        )
    if enc and first and lab:
        e2e = enc.ours + first.ours + lab.ours
        out.append(
            f"- end to end (encode + one concept + label image on host): "
            f"{fmt_seconds(e2e)} (GPU goal: <= 50 ms per 1008-px image)"
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--tiny", action="store_true", help="tiny random checkpoint (seconds)")
    kind.add_argument("--full", action="store_true", help="full-size random weights (default)")
    kind.add_argument("--checkpoint", help="an existing checkpoint folder (facebook/sam3 layout)")
    p.add_argument(
        "--full-dir", default=os.path.join(tempfile.gettempdir(), "napari-sam3-full-random")
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 (default: the engine's choice)")
    p.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help=f"WxH[-tiled] or 'all' (default tiny: all; full: {' '.join(FULL_DEFAULT_SIZES)})",
    )
    p.add_argument(
        "--tiles",
        type=int,
        default=None,
        help="tiles to run in the tiled case (default: all with --tiny, else 1)",
    )
    p.add_argument("--fast-path", default=None, help="NAPARI_SAM3_CPU_FAST for this run")
    p.add_argument("--no-fast-path-row", dest="fast_path_row", action="store_false")
    p.add_argument("--warmup", action="store_true", help="warm up first (always on CUDA)")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", help="also write the table to this markdown file")
    p.add_argument(
        "--encoder-study",
        action="store_true",
        help="only compare the vision-encoder fast-path modes (speed + agreement with float32)",
    )
    p.add_argument(
        "--heads-study",
        action="store_true",
        help="only compare the detector heads in float32 vs bf16 autocast (speed + agreement)",
    )
    p.add_argument("--modes", nargs="+", default=["off", "bf16", "bf16-compile"])
    p.add_argument("--reps", type=int, default=2, help="interleaved runs per mode (encoder study)")
    p.add_argument("--memory-probe", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast_path:
        os.environ["NAPARI_SAM3_CPU_FAST"] = args.fast_path
    if args.memory_probe:
        memory_probe(args)
        return 0
    if args.sizes is None or args.sizes == ["all"]:
        args.sizes = ALL_SIZES if (args.tiny or args.sizes == ["all"]) else FULL_DEFAULT_SIZES
    if args.tiles is None:
        args.tiles = 10**6 if args.tiny else 1
    start = time.perf_counter()
    folder = checkpoint_for(args)
    if args.encoder_study or args.heads_study:
        table = encoder_study(args, folder) if args.encoder_study else heads_study(args, folder)
        print(table)
        if args.out:
            Path(args.out).write_text(table + "\n", encoding="utf-8")
        return 0
    memory = {}
    if args.memory:  # first, in fresh processes, while this one holds no model
        memory["ours"] = measure_memory(args, folder, "ours")
        if not args.tiny:
            memory["plain (Sam3Model + Sam3TrackerModel)"] = measure_memory(args, folder, "plain")
    rows, info = run_suite(args, folder)
    info["kind"] = "tiny" if args.tiny else ("full-size" if not args.checkpoint else str(folder))
    info["threads"] = torch.get_num_threads()
    table = render(rows, info, memory, args)
    table += f"\n\nTotal run time {time.perf_counter() - start:.0f} s."
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
