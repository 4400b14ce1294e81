"""``napari-sam3`` console script: batch segmentation, counting, tracking, and a GUI launcher.

Imports neither Qt nor napari (``gui`` imports napari lazily). Exit codes: 0 every image done (or
already complete), 1 some images failed (each listed with its reason), 2 bad usage or a model that
cannot be loaded. Expected errors print one line; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from napari_sam3.cli_learning import add_adapt_parser, add_train_parser, run_adapt, run_train
from napari_sam3.core.defaults import COUNT_METHODS, DEVICES, POLARITIES
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.requests import CountRequest, SegmentRequest, TrackRequest, request_fields

# The flags' defaults ARE the requests' (one home: core.requests, from core.defaults).
COUNT = request_fields(CountRequest)
SEGMENT = request_fields(SegmentRequest)
TRACK = request_fields(TrackRequest)
# Old flag spellings, still accepted (hidden from --help): flag names are field names now.
RENAMED = {"--prompt": "--concepts", "--threshold": "--min-score"}

EXAMPLES = """\
examples:
  napari-sam3 segment images/*.tif --concepts "nucleus, mitotic cell" --out results/
  napari-sam3 segment plate/ --exemplar 120,40,160,82 --format tiff,coco,pairs --out results/
  napari-sam3 segment plate/ --exemplar 120,40,160,82 --negative-exemplar 10,10,60,60 --out r/
  napari-sam3 segment plate/ --concepts cell --out results/ --workers 4
  napari-sam3 segment plate/ --concepts cell --refine high --out results/
  napari-sam3 count plate/ --out counts/           # the shipped nucleus network, no download
  napari-sam3 count plate/ --method classical --diameter 18 --out counts/
  napari-sam3 train a.tif b.tif c.tif --labels counts/ --out my_net.safetensors
  napari-sam3 count plate/ --net my_net.safetensors --out counts2/
  napari-sam3 track movies/*.tif --concepts "nucleus" --out tracks/
  napari-sam3 track hyperstack.tif --concepts cell --axis T --out tracks/
  napari-sam3 track movies/ --concepts cell --out tracks/ --workers 2
  NAPARI_SAM3_MODEL=/data/models/sam3 napari-sam3 segment a.tif --concepts cell --out r/
  napari-sam3 adapt plate/*.tif --labels reviewed/ --concepts nucleus --out nucleus.sam3-adapter.safetensors
  napari-sam3 segment plate/ --concepts nucleus --adapter nucleus.sam3-adapter.safetensors --out r/

A rerun with the same --out skips images whose outputs are complete (checked against the
size and hash in <out>/.done/<stem>.json; <stem>_tracks.json for track) and redoes the rest.
"""


def _run_options() -> argparse.ArgumentParser:
    """The options every batch subcommand (segment, count, track) takes."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--out", required=True, metavar="DIR", help="output folder")
    shared.add_argument(
        "--concepts",
        action="append",
        metavar="TEXT",
        help='what to find, comma separated: "nucleus, cell" (repeatable)',
    )
    _old_spelling(shared, "--prompt", "concepts", action="append")
    shared.add_argument(
        "--model",
        default=None,
        metavar="ID_OR_DIR",
        help="hub id or local folder (default: $NAPARI_SAM3_MODEL or facebook/sam3)",
    )
    shared.add_argument("--device", default="auto", choices=list(DEVICES))
    shared.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs not written by this folder's runs with the "
        "same settings (complete outputs of the same settings are still skipped)",
    )
    par = shared.add_mutually_exclusive_group()
    par.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run on a local Dask cluster of N worker processes (one input file each at a time)",
    )
    par.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="run on an existing Dask scheduler, e.g. tcp://host:8786",
    )
    shared.add_argument(
        "--wait",
        action="store_true",
        help="when another run is writing into --out, wait for it to finish instead of refusing",
    )
    shared.add_argument("--no-progress", action="store_true", help="no progress bar")
    shared.add_argument("--debug", action="store_true", help="show tracebacks")
    return shared


def build_parser() -> argparse.ArgumentParser:
    from napari_sam3 import __version__
    from napari_sam3.core.results.refine import REFINEMENT_LEVELS

    parser = argparse.ArgumentParser(
        prog="napari-sam3",
        description="SAM3 (Segment Anything with Concepts) for microscopy: "
        "batch segmentation, counting, and the napari GUI.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-sam3 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{segment,count,track,train,adapt,gui}")

    run_options = _run_options()
    common = argparse.ArgumentParser(add_help=False, parents=[run_options])
    common.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files (.tif/.tiff/.ome.tif/.png/.jpg), folders or glob patterns",
    )
    common.add_argument(
        "--exemplar",
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="exemplar box in pixels (x = column), used on every image (repeatable)",
    )
    common.add_argument(
        "--negative-exemplar",
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="negative exemplar box in pixels: an object NOT to find, used on every image "
        "(repeatable; needs at least one --exemplar or a --prompt)",
    )
    common.add_argument(
        "--min-score",
        type=float,
        default=None,  # not given: the request's default (segment and count differ)
        help=f"minimum score (default {SEGMENT['min_score']}; count --method sam3: "
        f"{COUNT['min_score']})",
    )
    _old_spelling(common, "--threshold", "min_score", type=float)
    common.add_argument(
        "--mask-threshold",
        type=float,
        default=SEGMENT["mask_threshold"],
        help=f"mask binarisation threshold (default {SEGMENT['mask_threshold']})",
    )
    common.add_argument(
        "--tile",
        default=None,
        metavar="auto|N",
        help="tile large images (core.counting: overlapping tiles, stitched, de-duplicated): "
        "'auto' (tile size from the object diameter), a tile side in pixels, or 'none'. "
        "segment: no tiling unless given; count --method sam3: 'auto' unless given",
    )
    common.add_argument(
        "--diameter",
        type=float,
        default=None,
        metavar="PX",
        help="typical object diameter in pixels (classical counting; tile size for --tile auto)",
    )
    common.add_argument(
        "--format",
        default="tiff",
        metavar="LIST",
        help="outputs: tiff,png,coco,pairs (comma separated; tiff + csv always)",
    )
    seg = sub.add_parser(
        "segment",
        parents=[common],
        help="segment concepts with SAM3",
        description="Segment every instance of the prompted concepts in each image "
        "(each plane of a stack). Writes <stem>_labels.tif and <stem>_objects.csv "
        "per plane, plus manifest.json and counts.csv.",
    )
    seg.set_defaults(method="sam3", exemplar_from=[])
    seg.add_argument(
        "--exemplar-from",
        action="append",
        default=[],
        metavar="IMAGE:X0,Y0,X1,Y1",
        help="exemplar boxes drawn on IMAGE (several separated by ';'): SAM3 encodes them on that "
        "image once and finds similar objects in every input image (repeatable)",
    )
    seg.add_argument(
        "--refine",
        default=SEGMENT["refine"],
        type=str.lower,
        choices=[level.lower() for level in REFINEMENT_LEVELS],
        help="mask refinement, as in the widget: low = raw model masks, medium = small holes "
        "filled and specks removed, high = smoothed edges and all holes filled "
        f"(default {SEGMENT['refine']})",
    )
    cnt = sub.add_parser(
        "count",
        parents=[common],
        help="count objects (nucleus network, classical or SAM3)",
        description="Count objects per image plane; same outputs as segment.",
    )
    cnt.add_argument(
        "--method",
        choices=list(COUNT_METHODS),
        default=COUNT["method"],
        help="learned (default): the nucleus network shipped with the plugin; classical: "
        "threshold + watershed; both need no download. sam3: SAM3 with --prompt / --exemplar",
    )
    _add_net_option(cnt)
    cnt.add_argument(
        "--polarity",
        choices=list(POLARITIES),
        default=COUNT["polarity"],
        help="learned / classical: objects brighter or darker than the background; 'auto' (default) "
        "decides per plane and refuses planes that do not look like fluorescence, 'bright' or "
        "'dark' forces the count. A multi-plane file without --diameter is counted at ONE "
        "diameter estimated for the whole file (recorded in manifest.json)",
    )
    _add_track_parser(sub, run_options)
    add_train_parser(sub)
    _add_adapter_option(seg)
    _add_adapter_option(cnt)
    _add_adapter_option(sub.choices["track"])
    add_adapt_parser(sub)
    gui = sub.add_parser("gui", help="open napari with the SAM3 widget")
    gui.add_argument("--sample", action="store_true", help="also open the offline nuclei sample")
    gui.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _add_net_option(cnt) -> None:
    cnt.add_argument(
        "--net",
        default=None,
        metavar="FILE",
        help="learned: count with your own nucleus network (a .safetensors file from "
        "`napari-sam3 train` or the Count tab's Train on these labels) instead of the shipped one",
    )


def checked_net(args) -> str | None:
    """``--net`` checked once, before any image: exists, is a nucleus network, method learned."""
    net = getattr(args, "net", None)
    if not net:
        return None
    if args.method != "learned":
        raise Sam3Error(f"--net is a nucleus network for --method learned, not {args.method}.")
    from napari_sam3.core.learned.model_file import load_network

    load_network(net)  # Sam3Error naming the fix for a missing, damaged or foreign file
    return os.path.abspath(net)


def _add_track_parser(sub, run_options) -> None:
    trk = sub.add_parser(
        "track",
        parents=[run_options],
        help="track concepts through z/t stacks",
        description="Track every instance of the prompted concepts through each stack with "
        "SAM3's video tracker: the same id for the same object in every frame. Writes "
        "<stem>_tracks.tif (frames x height x width labels) and <stem>_tracks.csv (one row per "
        "frame and object) per stack, plus tracks.csv and tracks_manifest.json.",
    )
    trk.add_argument(
        "inputs",
        nargs="+",
        metavar="STACK_OR_DIR",
        help="TIFF stacks (T, H, W) or (T, H, W, 3), folders or glob patterns",
    )
    trk.add_argument(
        "--min-score",
        type=float,
        default=TRACK["min_score"],
        help=f"score an object needs to start a track (default {TRACK['min_score']})",
    )
    _old_spelling(trk, "--threshold", "min_score", type=float)
    trk.add_argument(
        "--start",
        type=int,
        default=TRACK["start"],
        metavar="FRAME",
        help="frame to start from: tracks run forward to the end, then back to frame 0 (default 0)",
    )
    trk.add_argument(
        "--axis",
        default=None,
        metavar="N|LETTER",
        help="the axis to track along, for data with more than one stack axis (e.g. TZYX): "
        "its letter (T, Z, C) or its index among the dimensions (length-1 ones dropped); "
        "the other stack axes give one tracked stack each",
    )


def _old_spelling(parser, flag: str, dest: str, **kwargs) -> None:
    """``flag``, the old name of the option ``dest``: still accepted, not shown by --help."""
    parser.add_argument(
        flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs
    )


def _flag_names(argv) -> dict[str, str]:
    """``{request field: the flag the user typed for it}`` (an old spelling where they used one)."""
    names = {
        f: "--" + f.replace("_", "-")
        for f in ("concepts", "min_score", "mask_threshold", "tile", "polarity", "start", "axis")
    }
    names.update({"exemplar_from": "--exemplar-from", "net": "--net"})
    typed = {a.split("=")[0] for a in argv or ()}
    for old, new in RENAMED.items():
        if old in typed and new not in typed:
            names[new[2:].replace("-", "_")] = old
    return names


def _request(cls, argv, **fields):
    """``cls(**fields)`` (the request checks itself); its message names the flags, not fields."""
    import re

    try:
        return cls(**fields)
    except Sam3Error as exc:
        text = str(exc)
        for field, flag in _flag_names(argv).items():
            new = f"--{field.replace('_', '-')}"
            if new in text:  # the message names the flag already (maybe its old spelling)
                text = text.replace(new, flag)
            else:
                text = re.sub(rf"(?<![\w-]){field}\b", flag, text, count=1)
        raise Sam3Error(text) from None


def _boxes(texts, flag: str) -> list:
    from napari_sam3.core.requests import parse_box

    return [parse_box(t, flag) for t in texts or ()]


def request_from_args(args, argv=None):
    """The `core.requests` request of a ``segment`` / ``count`` / ``track`` command line: each
    flag is the field of its name; flags not given take the request's defaults."""
    given = {
        k: getattr(args, k) for k in ("concepts", "min_score") if getattr(args, k, None) is not None
    }
    if args.command == "track":
        return _request(TrackRequest, argv, start=args.start, axis=args.axis, **given)
    positives = _boxes(args.exemplar, "--exemplar")
    negatives = _boxes(args.negative_exemplar, "--negative-exemplar")
    given.update(
        exemplars=positives + negatives,
        exemplar_labels=[1] * len(positives) + [0] * len(negatives),
        mask_threshold=args.mask_threshold,
    )
    if args.tile is not None:  # not given: the request's default (segment none, count auto)
        given["tile"] = args.tile
    if args.command == "segment":
        from napari_sam3.batch.exemplar_from import parse_exemplar_from

        exemplar_from = parse_exemplar_from(args.exemplar_from or [])
        if exemplar_from and (positives or negatives):
            raise Sam3Error(
                "--exemplar-from and --exemplar/--negative-exemplar cannot be mixed: --exemplar "
                "puts the same coordinates on every image; use one of them."
            )
        return _request(
            SegmentRequest, argv, exemplar_from=exemplar_from, refine=args.refine, **given
        )
    if args.method == "learned":  # a bad $NAPARI_SAM3_NUCLEUS_NET fails once, here
        from napari_sam3.core.learned.model_file import check_file

        check_file()
    return _request(
        CountRequest,
        argv,
        method=args.method,
        diameter=args.diameter,
        polarity=args.polarity,
        net=checked_net(args),
        **given,
    )


def _run_io(args) -> dict:
    """How a run reads and writes (not what it finds): the settings beside the request."""
    return {
        "model": args.model,
        "device": args.device,
        "overwrite": args.overwrite,
        "adapter": _adapter_path(args),
    }


def track_settings_from_args(args, argv=None):
    """`batch.track.TrackSettings` of a ``track`` command line; `Sam3Error` for bad options."""
    from napari_sam3.batch.track_settings import TrackSettings

    request = request_from_args(args, argv)
    return TrackSettings.from_request(request, **_run_io(args))


def settings_from_args(args, argv=None):
    """`batch.BatchSettings` of a ``segment`` / ``count`` command line: request + io."""
    from napari_sam3.batch.settings import BatchSettings
    from napari_sam3.core.validation import check_diameter
    from napari_sam3.io.export import parse_formats

    check_diameter(args.diameter, "--diameter")
    request = request_from_args(args, argv)
    return BatchSettings.from_request(request, formats=parse_formats(args.format), **_run_io(args))


def _run(args, argv) -> int:
    """segment / count (per plane) or track (per stack): same run options, same report."""
    if args.workers is not None and args.workers < 1:
        raise Sam3Error("--workers must be at least 1.")
    if args.command == "track":
        from napari_sam3.batch.track import run_track as run

        settings, what = track_settings_from_args(args, argv), "stack(s)"
    else:
        from napari_sam3.batch.process import run_batch as run

        settings, what = settings_from_args(args, argv), "plane(s)"
    report = run(
        args.inputs,
        settings,
        args.out,
        workers=args.workers,
        dask_address=args.dask,
        progress=not args.no_progress,
        argv=argv,
        debug=args.debug,
        wait=args.wait,
    )
    return _report(report, args, what)


def _report(report, args, what: str) -> int:
    """Print a run's summary and its failures (also when the run stopped); the exit code."""
    err = sys.stderr
    c = report.counts
    fails = report.failures
    if report.results or not report.fatal:
        print(
            f"napari-sam3: {len(report.results)} {what}: {c['done']} done, {c['skipped']} already "
            f"complete, {len(fails)} failed; {report.seconds:.1f} s. Outputs in {report.out_dir}",
            file=err,
        )
    for f in fails:
        name = f.get("stem") or ""
        print(f"  FAILED {f['source']}{' [' + name + ']' if name else ''}: {f['error']}", file=err)
        if args.debug and f.get("traceback"):
            print(f["traceback"], file=err)
    _print_warnings(report.results, err)
    if report.fatal:
        print(f"napari-sam3: error: {report.fatal}", file=err)
    return report.exit_code


def _print_warnings(results, err, most: int = 20) -> None:
    """The count's own warnings (nothing above the noise, not fluorescence, ...): one line each,
    the first ``most`` of them; all are in manifest.json."""
    lines = []
    for r in results:
        name = r.get("stem") or ""
        for w in r.get("warnings") or ():
            lines.append(f"  WARNING {r.get('source')}{' [' + name + ']' if name else ''}: {w}")
    for line in lines[:most]:
        print(line, file=err)
    if len(lines) > most:
        print(
            f"  ... and {len(lines) - most} more warnings (manifest.json lists them all)", file=err
        )


def _add_adapter_option(parser) -> None:
    parser.add_argument(
        "--adapter",
        default=None,
        metavar="FILE",
        help="a SAM3 adapter (napari-sam3 adapt) used by the SAM3 detector",
    )


def _adapter_path(args) -> str | None:
    """--adapter as an absolute path (Dask workers read it too); checked before the run."""
    value = getattr(args, "adapter", None)
    if not value:
        return None
    if getattr(args, "method", "sam3") != "sam3":
        raise Sam3Error("--adapter adapts SAM3; use it with --method sam3.")
    path = os.path.abspath(value)
    if not os.path.isfile(path):
        raise Sam3Error(f"--adapter {value}: no such file; give a .sam3-adapter.safetensors file.")
    return path


def _gui(args) -> int:
    print("Opening napari with the SAM3 widget...", file=sys.stderr)
    print(
        "SAM3 needs its weights: accept the licence at https://huggingface.co/facebook/sam3 and "
        "run `hf auth login`, or point NAPARI_SAM3_MODEL at a local folder with the checkpoint "
        "(e.g. NAPARI_SAM3_MODEL=/data/models/sam3 napari-sam3 gui). Counting (the nucleus "
        "network shipped with the plugin, or the classical counter) works without it.",
        file=sys.stderr,
    )
    try:  # torch imported after a QApplication exists can crash (pytorch issue 11326)
        import torch  # noqa: F401
    except ImportError:
        pass
    try:
        import napari
    except ImportError as exc:
        raise Sam3Error("napari is not installed: pip install 'napari[pyqt6]'.") from exc
    viewer = napari.Viewer(title="napari-sam3")
    if args.sample:
        viewer.open_sample("napari-sam3", "nuclei")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam3", "SAM3")
    if args.sample:  # the first minute: the sample is open, the counter needs no weights
        widget.tabs.setCurrentWidget(widget.count_tab)
        print("Sample opened: press Count in the SAM3 panel's Count tab.", file=sys.stderr)
    napari.run()
    return 0


def _quiet_third_party(debug: bool) -> None:
    """Keep library chatter off a CLI run's stderr (inside ``catch_warnings``: Python callers of
    the library still see it). What matters reaches the user as our own WARNING lines."""
    if debug:
        return
    import logging

    logging.getLogger("tifffile").setLevel(logging.ERROR)  # tifffile logs odd tags via logging
    warnings.filterwarnings("ignore", module="tifffile")
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")
    try:
        from PIL import Image

        # large microscopy PNGs are normal: PIL's bomb warning is noise (its 2x limit still errors)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (also when called from Python)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help / --version exit 0
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False) or bool(os.environ.get("NAPARI_SAM3_DEBUG"))
    typed = {a.split("=")[0] for a in argv}
    for old_flag, new_flag in RENAMED.items():
        if old_flag in typed and args.command in ("segment", "count", "track", "adapt"):
            print(f"napari-sam3: note: {old_flag} is now {new_flag} (both work).", file=sys.stderr)
    try:
        if args.command == "gui":
            return _gui(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "adapt":
            return run_adapt(args)
        with warnings.catch_warnings():
            _quiet_third_party(debug)
            return _run(args, argv)
    except KeyboardInterrupt:
        print("napari-sam3: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except Sam3Error as exc:
        if debug:
            traceback.print_exc()
        print(f"napari-sam3: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder (or a file we must read) refused us
        from napari_sam3.batch.outdir import describe_os_error

        if debug:
            traceback.print_exc()
        print(f"napari-sam3: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
