"""``napari-sam3 train``: fine-tune the nucleus network on labelled images from files.

Labels are found as ``<stem>_labels.tif`` in the labels folder (`batch.labelled_inputs`, shared
with ``adapt``; a corrected count folder trains directly). Planes without a labels file are left
out; everything is checked before training starts, and nothing is written on bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_sam3.batch.labelled_inputs import labelled_inputs
from napari_sam3.core.learned.finetune import LabelledPlane

__all__ = ["labelled_planes", "run_train"]


def labelled_planes(images, labels_dir: str | Path) -> list[LabelledPlane]:
    """(image plane, labels) for every plane of ``images`` with a labels file in ``labels_dir``."""
    found = labelled_inputs(images, labels_dir, every_plane=False)
    return [LabelledPlane(item.name, item.image, item.labels) for item in found]


def run_train(args) -> int:
    """The ``train`` command; returns the exit code (Sam3Error -> exit 2 in `cli.main`)."""
    from napari_sam3.core.learned.finetune import iter_finetune
    from napari_sam3.core.progress import run_to_end
    from napari_sam3.io.network_file import check_network_out, save_network

    err = sys.stderr
    check_network_out(args.out, args.overwrite)
    planes = labelled_planes(args.inputs, args.labels)
    n_obj = sum(int(len(set(p.labels[p.labels > 0].ravel().tolist()))) for p in planes)
    last = [-1.0]

    def show(p):
        import time

        if last[0] < 0:  # the first report comes after every check: nothing printed on bad input
            print(f"napari-sam3: training on {len(planes)} plane(s), {n_obj} objects", file=err)
            last[0] = 0.0
        now = time.monotonic()
        if args.no_progress or (now - last[0] < 5 and p.step != p.total):
            return
        last[0] = now
        print(f"  {p.message}", file=err, flush=True)

    res = run_to_end(iter_finetune(planes, base=args.base, steps=args.steps), on_progress=show)
    res.path = save_network(res.net, args.out, res.meta, overwrite=args.overwrite)
    print(
        f"napari-sam3: {res.summary} ({res.held_out} held out; {res.steps} steps, "
        f"{res.seconds:.0f} s). Saved {res.path}",
        file=err,
    )
    if res.better:
        print(f"Count with it: napari-sam3 count IMAGES --net {res.path} --out DIR", file=err)
    return 0
