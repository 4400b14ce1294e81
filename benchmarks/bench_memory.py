"""Peak memory and time of ``napari-sam3 count`` against the core's counting, by image size.

Every case runs in its own subprocess; its peak resident memory is the child's ``ru_maxrss``
(`os.wait4`), so one case cannot inherit another's peak. Cases:

* dense synthetic nuclei, 2048 x 2048 (~2,600 nuclei) and 4096 x 4096 (~22,000 nuclei): the core
  (`count_objects` in-process, time of the call) and the CLI (`napari-sam3 count`, whole process:
  wall time, and the run time the CLI prints);
* with ``--large``: a 20000 x 20000 uint8 plane (the 2048 px image tiled), CLI only (tiled counting).

    python benchmarks/bench_memory.py [--large] [--markdown benchmarks/results_memory.md]

Goals (issue 11): 2048 px peak <= 1.5 GiB; 4096 px <= 2.5 GiB and <= 1.5x the core's time;
20000 px <= 8 GiB.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30
CORE = """
import sys, time, tifffile
from napari_sam3.core.counting.count import count_objects
img = tifffile.imread(sys.argv[1])
t = time.perf_counter()
r = count_objects(img)
print("COUNT", r.count, "SECONDS", time.perf_counter() - t)
"""


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (GiB) and its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall": time.perf_counter() - t0,
        "peak_gib": usage.ru_maxrss * 1024 / GIB,  # KiB on Linux
        "rc": proc.returncode,
        "out": out,
    }


MAKE = """
import sys, numpy as np, tifffile
from napari_sam3.core.synthetic import synthetic_nuclei
path, side, n, d, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if large == "1":  # the 2048 px image tiled: a realistic plane without generating 20000 px noise
    img, _ = synthetic_nuclei((2048, 2048), n=2600, seed=1, diameter=30.0, dtype=np.uint8)
    reps = -(-side // 2048)
    img = np.tile(img, (reps, reps))[:side, :side]
    print("TRUTH", -1)
else:
    img, lab = synthetic_nuclei((side, side), n=n, seed=1, diameter=d)
    print("TRUTH", len(np.unique(lab)) - 1)
tifffile.imwrite(path, img)
"""


def make_image(folder: Path, side: int, n: int = 0, diameter: float = 0.0, large: bool = False):
    """Write the test image in a child process (this process stays small: a child's ru_maxrss
    counts the memory of the process it was forked from)."""
    path = folder / f"nuclei_{side}.tif"
    r = run_child(
        [sys.executable, "-c", MAKE, str(path), str(side), str(n), str(diameter), str(int(large))]
    )
    m = re.search(r"TRUTH (-?\d+)", r["out"])
    if r["rc"] != 0 or not m:
        raise SystemExit(f"could not make the {side} px image: {r['out'][-500:]}")
    return path, int(m.group(1))


def cli_case(image: Path, out: Path) -> dict:
    exe = shutil.which("napari-sam3") or sys.executable
    cmd = [exe] if exe.endswith("napari-sam3") else [exe, "-m", "napari_sam3.cli"]
    r = run_child([*cmd, "count", str(image), "--out", str(out), "--no-progress"])
    m = re.search(r"failed; ([0-9.]+) s\.", r["out"])
    r["run"] = float(m.group(1)) if m else float("nan")
    csv = out / f"{image.stem}_objects.csv"
    r["count"] = sum(1 for _ in open(csv)) - 1 if csv.exists() else -1
    return r


def core_case(image: Path) -> dict:
    r = run_child([sys.executable, "-c", CORE, str(image)])
    m = re.search(r"COUNT (\d+) SECONDS ([0-9.]+)", r["out"])
    r["count"], r["run"] = (int(m.group(1)), float(m.group(2))) if m else (-1, float("nan"))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also the 20000 x 20000 plane")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        for side, n, d in ((2048, 2600, 30.0), (4096, 22000, 24.0)):
            image, truth = make_image(tmp, side, n, d)
            core = core_case(image)
            cli = cli_case(image, tmp / f"out_{side}")
            ratio = cli["run"] / core["run"]
            rows.append((f"{side}² ({truth} nuclei)", "core count_objects", core, ""))
            rows.append((f"{side}² ({truth} nuclei)", "napari-sam3 count", cli, f"{ratio:.2f}x"))
            image.unlink()
        if args.large:
            image, _ = make_image(tmp, 20000, large=True)
            cli = cli_case(image, tmp / "out_large")
            rows.append(("20000² uint8 (tiled)", "napari-sam3 count", cli, ""))
    cpu = platform.processor() or platform.machine()
    try:
        name = next(
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        )
        cpu = f"{name}, {os.cpu_count()} cores"
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU: {cpu}",
        "",
        "| image | what | objects | peak RSS (GiB) | run (s) | process wall (s) | vs core |",
        "|---|---|---|---|---|---|---|",
    ]
    for image, what, r, ratio in rows:
        lines.append(
            f"| {image} | {what} | {r['count']} | {r['peak_gib']:.2f} | {r['run']:.1f} | "
            f"{r['wall']:.1f} | {ratio} |"
        )
        if r["rc"] != 0:
            lines.append(f"| | exit {r['rc']}: {r['out'][-200:]!r} | | | | | |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(
            "# Memory and time of `napari-sam3 count` (bench_memory.py)\n\n"
            "`run` is the time the CLI reports for its run loop (read, count, write every "
            "output, records); `process wall` adds Python start-up and imports. The core row is "
            "`count_objects` alone, in its own process.\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
