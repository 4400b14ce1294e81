"""A tiny random SAM3 checkpoint, built offline in seconds, for tests (ours and our users').

The checkpoint has the same layout as ``facebook/sam3``: a ``sam3_video`` config with a detector part
and a tracker part, weights saved with ``save_pretrained`` (keys ``detector_model.*``,
``tracker_model.*``, ``tracker_neck.*``), and the processor + tokenizer files. Every size is shrunk
(image 224 px, patch 14, hidden size 32, 2 layers) and the weights are random but deterministic, so
results are reproducible but meaningless. Use it to test plumbing, never accuracy::

    from napari_sam3.testing import make_tiny_checkpoint
    from napari_sam3.core.sam3.engine import Sam3Engine

    path = make_tiny_checkpoint(tmp_path / "sam3-tiny")
    engine = Sam3Engine.load(path, device="cpu")
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

TINY_IMAGE_SIZE = 224
TINY_PATCH = 14
TINY_HIDDEN = 32
# The video tracker needs memory channels of exactly 64 (transformers hard-codes kv_in_dim=64 in
# its memory cross-attention) and a hidden size that is a multiple above them (it splits object
# pointers into 64-wide tokens); the default 32 cannot track through frames.
TINY_VIDEO_HIDDEN = 128
TINY_VIDEO_MEMORY = 64
TINY_LAYERS = 2
TINY_HEADS = 2
TINY_QUERIES = 20
TINY_TEXT_LENGTH = 32  # Sam3Processor pads text to 32 tokens
_SCORE_GAIN = 10.0

_cache_lock = threading.Lock()
_cached_dirs: dict[bool, Path] = {}
_tempdirs: dict[bool, tempfile.TemporaryDirectory] = {}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (the byte-level alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_vocab() -> dict[str, int]:
    """256 byte symbols, the same with ``</w>``, then start and end tokens (514 entries)."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def tiny_config(video: bool = False):
    """The ``Sam3VideoConfig`` of the tiny checkpoint (detector + tracker parts).

    ``video=True``: wider (hidden 128, memory 64) so that the video tracker can run
    (`core.stack_tracking`); the default stays small for the single-plane tests.
    """
    from napari_sam3.core.sam3.triton_isolation import isolate_triton

    isolate_triton()  # a viewer may exist already (see core.sam3.triton_isolation)
    from transformers import Sam3VideoConfig

    vocab = tiny_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    size, patch = TINY_IMAGE_SIZE, TINY_PATCH
    hid = TINY_VIDEO_HIDDEN if video else TINY_HIDDEN
    grid = size // patch
    feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    # width, MLP width and heads of every transformer in the tiny model
    width = dict(hidden_size=hid, intermediate_size=2 * hid, num_attention_heads=TINY_HEADS)
    backbone = dict(
        model_type="sam3_vit_model",
        **width,
        num_hidden_layers=TINY_LAYERS,
        image_size=size,
        patch_size=patch,
        pretrain_image_size=size,
        window_size=grid // 2,
        global_attn_indexes=[TINY_LAYERS - 1],
    )
    vision = dict(
        model_type="sam3_vision_model",
        backbone_config=backbone,
        fpn_hidden_size=hid,
        backbone_feature_sizes=feature_sizes,
    )
    block = dict(**width, num_layers=TINY_LAYERS)
    detector = dict(
        model_type="sam3",
        vision_config=vision,
        text_config=dict(
            model_type="clip_text_model",
            vocab_size=len(vocab),
            **width,
            projection_dim=hid,
            num_hidden_layers=TINY_LAYERS,
            max_position_embeddings=TINY_TEXT_LENGTH,
            hidden_act="gelu",
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        geometry_encoder_config=dict(block),
        detr_encoder_config=dict(block),
        detr_decoder_config=dict(block, num_queries=TINY_QUERIES),
        mask_decoder_config=dict(hidden_size=hid, num_attention_heads=TINY_HEADS),
    )
    tracker = dict(
        model_type="sam3_tracker_video",
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=hid, image_size=size, patch_size=patch),
        mask_decoder_config=dict(
            hidden_size=hid,
            mlp_dim=2 * hid,
            num_attention_heads=TINY_HEADS,
            iou_head_hidden_dim=hid,
        ),
        image_size=size,
        memory_attention_hidden_size=hid,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * hid,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=hid,
        memory_encoder_output_channels=TINY_VIDEO_MEMORY if video else hid // 2,
        mask_downsampler_embed_dim=hid,
        memory_fuser_embed_dim=hid,
        memory_fuser_intermediate_dim=2 * hid,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker)
    config.image_size = size
    return config


def make_tiny_checkpoint(path: str | Path, seed: int = 0, *, video: bool = False) -> Path:
    """Write a tiny random SAM3 checkpoint (``facebook/sam3`` layout) to ``path`` and return it.

    Runs offline in a few seconds. The same ``seed`` gives the same weights. ``video=True``: a
    wider checkpoint whose tracker can also track through frames (see `tiny_config`).
    """
    import torch

    from napari_sam3.core.sam3.triton_isolation import isolate_triton

    isolate_triton()
    from transformers import CLIPTokenizer, Sam3ImageProcessor, Sam3Processor, Sam3VideoModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    # Tokenizer: byte-level CLIP BPE without merges, written as vocab.json + empty merges.txt.
    (path / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    if len(tokenizer) != len(tiny_vocab()):  # the installed tokenizer wants the dict itself
        tokenizer = CLIPTokenizer(vocab=tiny_vocab(), merges=[])
    image_processor = Sam3ImageProcessor(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        mask_size={
            "height": 4 * TINY_IMAGE_SIZE // TINY_PATCH,
            "width": 4 * TINY_IMAGE_SIZE // TINY_PATCH,
        },
    )
    processor = Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(path)

    config = tiny_config(video)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Sam3VideoModel(config).eval()
        # post_init zero-initialises a few parameters (no-memory embeddings); give everything a
        # small random value so that every weight matters in the tests.
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not param.abs().sum():
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
                # Spread the scores (random heads give ~0.25 everywhere) so thresholds matter.
                if name.startswith("detector_model.dot_product_scoring") and name.endswith(
                    "proj.weight"
                ):
                    param.mul_(_SCORE_GAIN)
                elif name.startswith("detector_model.detr_decoder.presence_head.layer3"):
                    param.mul_(_SCORE_GAIN)
                elif "iou_prediction_head.proj_out" in name:
                    param.mul_(3 * _SCORE_GAIN)
        model.save_pretrained(path)
        # transformers 5.x save_pretrained writes the tracker weights as
        # ``tracker_model.tracker_model.*`` (the sam3_tracker key conversion is applied in reverse,
        # scoped to the nested tracker). The published checkpoint and every loader expect
        # ``tracker_model.*``, i.e. the model's own state_dict keys: rewrite the weights that way.
        _write_weights(model, path / "model.safetensors")
    finally:
        torch.random.set_rng_state(state)
    return path


def _write_weights(model, file: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(file), metadata={"format": "pt"})


def tiny_checkpoint_dir(video: bool = False) -> Path:
    """One tiny checkpoint per process (and per ``video``), built on first use in a temporary folder."""
    with _cache_lock:
        cached = _cached_dirs.get(video)
        if cached is None or not (cached / "config.json").exists():
            _tempdirs[video] = tempfile.TemporaryDirectory(prefix="napari-sam3-tiny-")
            name = "sam3-tiny-video" if video else "sam3-tiny"
            cached = make_tiny_checkpoint(Path(_tempdirs[video].name) / name, video=video)
            _cached_dirs[video] = cached
        return cached


class InlineSubmit:
    """A session's ``submit(make, desc, group, on_result, status=None)`` that runs each job's
    generator to its end at once (`core.progress.run_to_end`): sessions without Qt or workers.

    ``hold = True`` keeps jobs waiting until `run_waiting` (to act while a job is "running");
    ``descs`` and ``progress`` record what was submitted and reported.
    """

    def __init__(self) -> None:
        self.hold = False
        self.waiting: list = []
        self.descs: list[str] = []
        self.progress: list[str] = []

    def __call__(self, make, desc, group, on_result, status=None):
        self.descs.append(desc)
        self.waiting.append((make, on_result))
        if not self.hold:
            self.run_waiting()
        return desc

    def run_waiting(self) -> None:
        from napari_sam3.core.progress import run_to_end

        while self.waiting:
            make, on_result = self.waiting.pop(0)
            on_result(run_to_end(make(), lambda p: self.progress.append(p.message)))


__all__ = [
    "InlineSubmit",
    "make_tiny_checkpoint",
    "tiny_checkpoint_dir",
    "tiny_config",
    "tiny_vocab",
]
