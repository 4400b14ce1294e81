"""``napari-sam3 train`` and ``napari-sam3 adapt``: the learning commands' parsers and handlers.

Both learn from a user's labelled images and write one file (a nucleus network, a SAM3 adapter);
`cli.main` routes to them. No Qt, no napari.
"""

from __future__ import annotations

import argparse
import sys
import time

from napari_sam3.core.defaults import DEVICES
from napari_sam3.core.errors import Sam3Error


def _file_run_flags(parser) -> None:
    """The flags of a command that writes one file: --overwrite, --no-progress, --debug."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _learning_parser(sub, name: str, help: str, description: str, *, inputs: str, out: str):
    """A learning command's parser: images, ``--labels`` (<stem>_labels.tif) and ``--out``."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help=inputs)
    parser.add_argument(
        "--labels", required=True, metavar="DIR", help="folder of <stem>_labels.tif"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help=out)
    return parser


def add_train_parser(sub) -> None:
    from napari_sam3.core.defaults import FINETUNE_STEPS, finetune_time_text

    trn = _learning_parser(
        sub,
        "train",
        "fine-tune the nucleus network on your own labels",
        "Fine-tune the nucleus network on labelled images (CPU, minutes). Labels are "
        "read as <stem>_labels.tif from --labels (what count and Export write; a stack's planes "
        "as <stem>_z003_labels.tif). Part of the labels is held out and F1 before -> after is "
        "printed; the new network is saved with its provenance.",
        inputs="the labelled images",
        out="<name>.safetensors to write",
    )
    trn.add_argument(
        "--steps",
        type=int,
        default=FINETUNE_STEPS,
        help=f"training steps (default {FINETUNE_STEPS}: {finetune_time_text(FINETUNE_STEPS)} on 2 CPU cores)",
    )
    trn.add_argument(
        "--base", default=None, metavar="FILE", help="network to start from (default: shipped)"
    )
    _file_run_flags(trn)


def add_adapt_parser(sub) -> None:
    from napari_sam3.core.defaults import ADAPT_HOLDOUT, ADAPT_RANK, ADAPT_STEPS

    ad = _learning_parser(
        sub,
        "adapt",
        "adapt SAM3 to your labelled images (writes an adapter file)",
        "Train a SAM3 adapter on labelled images: the detector heads learn your "
        "objects from <stem>_labels.tif in --labels (rejected objects in <stem>_objects.csv are "
        "negatives); part of the labels is held out and scored before -> after. The adapter is "
        "written only when it is better there (--keep-worse writes it anyway).",
        inputs="image files or folders",
        out="adapter file to write",
    )
    ad.add_argument("--concepts", metavar="TEXT", help="the concept, e.g. nucleus (required)")
    ad.add_argument("--prompt", dest="concepts", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ad.add_argument("--steps", type=int, default=ADAPT_STEPS, help=f"default {ADAPT_STEPS}")
    ad.add_argument("--rank", type=int, default=ADAPT_RANK, help=f"default {ADAPT_RANK}")
    ad.add_argument(
        "--holdout",
        type=float,
        default=ADAPT_HOLDOUT,
        help=f"fraction of images (one image: of its objects) held out (default {ADAPT_HOLDOUT})",
    )
    ad.add_argument("--model", default=None, metavar="ID_OR_DIR", help="as for segment")
    ad.add_argument("--device", default="auto", choices=list(DEVICES))
    ad.add_argument(
        "--keep-worse", action="store_true", help="write the adapter even when it is not better"
    )
    _file_run_flags(ad)


def run_train(args) -> int:
    """``napari-sam3 train``: exit 0 network written (`batch.train.run_train`)."""
    from napari_sam3.batch.train import run_train as run

    return run(args)


def run_adapt(args) -> int:
    """``napari-sam3 adapt``: exit 0 adapter written, 1 not better (nothing written), 2 errors."""
    from napari_sam3.batch.adapt_inputs import collect_examples
    from napari_sam3.core.progress import run_to_end
    from napari_sam3.core.sam3.adapt import AdaptSettings, iter_adapt
    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.io.adapter_file import write_adapter
    from napari_sam3.io.atomic import check_writable

    if not args.concepts:
        raise Sam3Error('adapt needs --concepts "nucleus" (the concept the labels show).')
    check_writable(args.out, args.overwrite)  # before minutes of training
    examples = collect_examples(args.inputs, args.labels)
    engine = Sam3Engine.load(args.model, device=args.device)
    settings = AdaptSettings(args.concepts, steps=args.steps, rank=args.rank, holdout=args.holdout)
    last = [0.0]

    def show(p) -> None:
        now = time.monotonic()
        if not args.no_progress and (now - last[0] > 2 or p.step == p.total):
            last[0] = now
            print(f"napari-sam3: {p.message}", file=sys.stderr)

    result = run_to_end(iter_adapt(engine, examples, settings), show)
    print(f"napari-sam3: {result.message}", file=sys.stderr)
    if not result.selected and not args.keep_worse:
        print("napari-sam3: no adapter written (--keep-worse writes it anyway).", file=sys.stderr)
        return 1
    write_adapter(result.adapter, args.out, overwrite=args.overwrite)
    print(f"napari-sam3: adapter written to {args.out}", file=sys.stderr)
    return 0
