"""Leave one set out: does the nucleus network count a kind of image it never saw?

    HF_HUB_OFFLINE=1 python training/train_nucleus_net.py --leave-out mnfinder \\
        --out benchmarks/_out/net_without_mnfinder.safetensors
    HF_HUB_OFFLINE=1 python benchmarks/bench_leave_out.py mnfinder \\
        benchmarks/_out/net_without_mnfinder.safetensors --out benchmarks/results_leave_out.md

Scores, on ALL images of the left-out set (none of them seen by that network): the network
trained without the set, the shipped network (which saw the set's train side; scored on the test
side only, for reference), the classical counter and the scikit-image baseline given the true
diameter. No diameter is given to ours. Same metrics as bench_real.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real as B  # noqa: E402
import real_sets as R  # noqa: E402

from napari_sam3.core.defaults import NUCLEUS_NET_ENV  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", choices=["mnfinder", "hela", "scratch"])
    ap.add_argument("weights", type=Path, help="a network trained with --leave-out SET")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    try:
        every, test = R.load_set(a.set), R.load_split(a.set, "test")
    except R.Unavailable as e:
        print(f"SKIPPED: {e}")
        return 0
    lines = [B._row(B.HEAD), B._row(["---"] * len(B.HEAD))]
    print(lines[0], flush=True)
    runs = [
        (f"{a.set}, all images", "learned, trained WITHOUT this set", every, str(a.weights)),
        (f"{a.set}, all images", "classical", every, None),
        (f"{a.set}, all images", "baseline", every, None),
        (f"{a.set}, test side", "learned (shipped)", test, ""),
        (f"{a.set}, test side", "learned, trained WITHOUT this set", test, str(a.weights)),
    ]
    for name, label, files, weights in runs:
        method = "learned" if label.startswith("learned") else label
        if weights is None:
            os.environ.pop(NUCLEUS_NET_ENV, None)
        else:
            os.environ[NUCLEUS_NET_ENV] = weights
        r = B.score(files, method)
        lines.append(B.line(name, label, r))
        print(lines[-1], flush=True)
    os.environ.pop(NUCLEUS_NET_ENV, None)
    if a.out:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(a.out).write_text(
            f"Command: `HF_HUB_OFFLINE=1 python benchmarks/bench_leave_out.py "
            f"{' '.join(sys.argv[1:])}`  \nCPU: {B.cpu_name()}; {stamp}\n\n"
            + "\n".join(lines)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
