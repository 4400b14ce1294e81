"""The defaults every front end shares (widget, CLI, Python API): one home for each of them."""

from __future__ import annotations

import os

MODEL_ID = "facebook/sam3"  # gated hub checkpoint (a sam3_video checkpoint: detector + tracker)
HUB_PAGE = f"https://huggingface.co/{MODEL_ID}"
MODEL_ENV = "NAPARI_SAM3_MODEL"  # hub id or local folder; the widget's and the CLI's default

DEVICES = ("auto", "cpu", "cuda", "mps")

SCORE_THRESHOLD = 0.5  # minimum SAM3 score kept by segment and track (widget and CLI)
# SAM3 counting keeps less certain objects: its scores run low on microscopy, and a count is checked
# against the classical one rather than object by object (widget and CLI alike).
COUNT_SCORE_THRESHOLD = 0.3
MASK_THRESHOLD = 0.5  # mask-logit probability that makes a pixel part of an object

# Counting without SAM3: "learned" (the shipped nucleus network, benchmarks/results_real.md) or
# "classical" (threshold + watershed); both need no download. Widget, CLI and Python API default.
COUNT_METHODS = ("learned", "classical", "sam3")
WITHOUT_SAM3 = ("learned", "classical")  # counters that take a diameter, not prompts
DEFAULT_COUNT_METHOD = "learned"
NUCLEUS_NET_ENV = "NAPARI_SAM3_NUCLEUS_NET"  # weights of your own training run (safetensors)

POLARITIES = ("auto", "bright", "dark")  # learned / classical: objects brighter or darker
# How SAM3 counting sizes tiles for tile="auto" (core.counting.tiling.choose_tile_size): one object
# spans this many model pixels, and a tile holds at most this many objects.
COUNT_TARGET_PX = 40.0
COUNT_MAX_OBJECTS_PER_TILE = 150

# Smallest tile side SAM3 counting accepts: below it a tile holds too little context for SAM3
# (its input is 1008 px, so a 64 px tile is already upsampled ~16x).
MIN_TILE = 64


def default_model() -> str:
    """``$NAPARI_SAM3_MODEL`` when set, else the hub checkpoint."""
    return os.environ.get(MODEL_ENV, "").strip() or MODEL_ID


# Object diameters (pixels) any counter accepts. Below 1 px there is no object (and tiny values
# overflow the upsampling); above 1000 px the classical counter's block-mean downscale makes
# (diameter / ~10)^2 passes per plane (100000 px hung), and such objects are not "counted": bin
# the image first.
MIN_DIAMETER = 1.0
MAX_DIAMETER = 1000.0

# Fine-tuning the nucleus network on a user's labels (`core.learned.finetune`): a step of 8 crops
# takes ~0.15 s on 2 idle CPU cores (~0.8 s when they are shared), so 0.5-4 min per run
FINETUNE_STEPS = 200
FINETUNE_LR = 1e-3
FINETUNE_BATCH = 8
FINETUNE_STEP_SECONDS = (0.15, 0.8)  # per step: 2 idle CPU cores .. shared ones
# pull toward the base weights: loss += anchor * sum ||w - w_base||^2 (L2-SP); 0: none
FINETUNE_ANCHOR = 0.0


def finetune_time_text(steps: int) -> str:
    """The expected training time of ``steps`` steps on 2 CPU cores (idle .. shared)."""
    lo, hi = (steps * s / 60 for s in FINETUNE_STEP_SECONDS)
    if hi < 1:
        return (
            f"about {steps * FINETUNE_STEP_SECONDS[0]:.0f}-{steps * FINETUNE_STEP_SECONDS[1]:.0f} s"
        )
    return f"about {max(lo, 0.1):.1f}-{hi:.0f} min"


# The check: a strip at the end of EVERY labelled plane is held out (training crops come from the
# rest) and the new network is kept only when the errors it fixes there outnumber those it makes
# by a one-sided 5 % sign test (fixed - made >= 1.645 sqrt(fixed + made)), so a tie or a gain
# within the noise of a few objects keeps the base.
FINETUNE_HOLD_OUT = 0.25  # of each plane's longer side
FINETUNE_GAIN_Z = 1.645
FINETUNE_MIN_HELD_OUT = 50  # fewer held-out objects: the result says the check is weak

# Adapting SAM3 to a user's labels (core.sam3.adapt, `napari-sam3 adapt`, the widget's Adapt):
# low-rank updates of the detector heads on cached image features (benchmarks/results_adapt.md).
ADAPT_STEPS = 150
ADAPT_RANK = 8
ADAPT_LEARNING_RATE = 2e-3
ADAPT_HOLDOUT = 0.25  # fraction of the images (or, with one image, of its objects) held out
