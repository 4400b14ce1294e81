"""Counting accuracy on REAL labelled microscopy (the yardstick; bench_counting.py is synthetic).

    HF_HUB_OFFLINE=1 python benchmarks/bench_real.py --out benchmarks/results_real.md \
        --loso-out benchmarks/results_leave_out.md
    HF_HUB_OFFLINE=1 python benchmarks/bench_real.py --sets hela --no-loso   # same-source only

HEADLINE: leave-one-source-out. For every labelled fluorescence nucleus source
(`real_sets.FLUORESCENT`), the network trained WITHOUT that source
(``training/train_nucleus_net.py --leave-out S --out benchmarks/_out/loso/S.safetensors``) is
scored on ALL of that source's images, beside the classical counter and the baseline on the same
images: how the counter does on a lab's images it never saw. A missing network file is reported
with the command that makes it. ``--compare-dir`` adds a second set of such networks (e.g. an older
augmentation recipe at the same steps) as an extra column.

Scores of the leave-one-source-out rows are remembered in benchmarks/_out/loso_scores.json
(delete it after changing a counter).

SECOND, labelled "same-source": the shipped network on the test side of its training sources
(other frames / files of a source it was trained on).

The wheels are fetched once with ``pip download --no-deps`` into benchmarks/_out/real_data/ and
converted to .npz there (see real_sets.py for sources and licences); without a reachable package
index and no cache, the script says so and exits 0.

Same-source images: the TEST side of `real_sets.split_of` (mnfinder sets: every other file;
HeLa, scratch and CHO 3-D + t: the later half of the time points; phase contrast: all), because
the ``learned`` counter was trained on the other side; ``--side all`` scores classical and
baseline on every image (the learned one is never scored on images it was trained on).

Methods, each as a user runs it:
- ``learned``: the shipped nucleus network (``napari-sam3 count IMG --method learned``), NO
  diameter given (``count_stack`` for a stack, ``count_objects`` for a plane);
- ``classical``: the same with ``--method classical``, NO diameter given;
- ``baseline``: plain scikit-image (Gaussian, Otsu, fill holes, distance transform,
  ``peak_local_max``, watershed) GIVEN the true median diameter.

Metrics per set (all planes pooled): objects found vs truth, F1 at IoU 0.5 (one-to-one matching),
mean IoU of the matched pairs, the worst plane's count / truth, the diameter used vs the true median
equivalent diameter, seconds (and seconds per 1024^2 plane), peak traced memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_sets as R  # noqa: E402

from napari_sam3.core.counting.count import count_objects, count_stack  # noqa: E402
from napari_sam3.core.defaults import NUCLEUS_NET_ENV  # noqa: E402
from napari_sam3.core.results.measure import match_labels  # noqa: E402

HERE = Path(__file__).resolve().parent


def true_diameter(*labs: np.ndarray) -> float:
    planes = [p for lab in labs for p in (lab if lab.ndim == 3 else lab[None])]
    areas = np.concatenate([np.bincount(p.ravel())[1:] for p in planes])
    areas = areas[areas > 0]
    return float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else float("nan")


def baseline(img: np.ndarray, d: float) -> np.ndarray:
    """Plain scikit-image nucleus segmentation given the diameter ``d`` (one plane)."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    sm = gaussian(img.astype(np.float32), sigma=max(1.0, d / 10))
    if sm.max() <= sm.min():
        return np.zeros(img.shape, np.int32)
    mask = ndi_fill(sm > threshold_otsu(sm))
    from scipy import ndimage as ndi

    dt = ndi.distance_transform_edt(mask)
    pk = peak_local_max(dt, min_distance=max(1, int(d / 4)), labels=ndi.label(mask)[0])
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    lab = watershed(-dt, markers, mask=mask)
    areas = np.bincount(lab.ravel())
    small = areas < 0.1 * np.pi * d * d / 4
    small[0] = False
    return np.where(small[lab], 0, lab).astype(np.int32)


def ndi_fill(mask):
    from scipy import ndimage as ndi

    return ndi.binary_fill_holes(mask)


def run_method(method: str, img: np.ndarray, truth: np.ndarray):
    """Labels (same shape as img), diameter used, warnings."""
    if method in ("classical", "learned"):
        res = count_stack(img, method) if img.ndim == 3 else count_objects(img, method)
        return res.labels, res.diameter, res.warnings
    d = true_diameter(truth)
    planes = img if img.ndim == 3 else img[None]
    lab = np.stack([baseline(p, d) for p in planes])
    return (lab if img.ndim == 3 else lab[0]), d, []


# A plane of a z-stack is "in focus" when its nuclei stand out at least half as much as in the
# stack's sharpest plane (contrast: 99.9th percentile over the median); planes far below carry
# only blurred nuclei, which the supplied 3-D references (cho3dt) outline as ragged fragments or
# leave out. The outside evaluation of issue 18 scored its 3-D stack on in-focus planes too.
IN_FOCUS_CONTRAST = 0.5


def in_focus_planes(stack: np.ndarray) -> np.ndarray:
    """Boolean per plane of ``stack`` (n, H, W): in focus (see IN_FOCUS_CONTRAST)."""
    p = np.percentile(stack.reshape(stack.shape[0], -1), [50, 99.9], axis=1)
    contrast = p[1] - p[0]
    return contrast >= IN_FOCUS_CONTRAST * contrast.max()


def recall_of(r: dict) -> float:
    """Share of the reference's objects found (from the pooled F1 and counts)."""
    tp = r["f1"] * (r["n_true"] + r["n_pred"]) / 2
    return tp / r["n_true"] if r["n_true"] else float("nan")


def score(files, method: str) -> dict:
    tp = fp = fn = nt = npred = 0
    focus = {"planes": 0, "of": 0, "tp": 0, "fp": 0, "fn": 0}
    iou_sum, worst, secs, peak, px, on_empty = 0.0, 0.0, 0.0, 0, 0, 0
    diams, warns = [], []
    for _name, img, truth in files:
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            lab, d, w = run_method(method, img, truth)
        except MemoryError:
            lab, d, w = np.zeros_like(truth), float("nan"), ["out of memory"]
        secs += time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        px += img.size
        diams.append(d)
        warns.extend(w)
        sharp = in_focus_planes(img) if img.ndim == 3 else np.ones(1, bool)
        for k, (t, p) in enumerate(
            zip(truth if truth.ndim == 3 else [truth], lab if lab.ndim == 3 else [lab], strict=True)
        ):
            m = match_labels(t, p)
            tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
            if img.ndim == 3:
                focus["of"] += 1
                if sharp[k]:
                    focus["planes"] += 1
                    for c in ("tp", "fp", "fn"):
                        focus[c] += m[c]
            nt, npred = nt + m["n_true"], npred + m["n_pred"]
            iou_sum += m["mean_iou"] * m["tp"]
            if m["n_true"]:
                worst = max(worst, m["n_pred"] / m["n_true"])
            else:  # a plane whose truth is empty: how many objects we put there
                on_empty = max(on_empty, m["n_pred"])
    return dict(
        n_true=nt,
        n_pred=npred,
        f1=2 * tp / max(2 * tp + fp + fn, 1) if nt or npred else 1.0,
        iou=iou_sum / tp if tp else float("nan"),
        worst=worst,
        on_empty=on_empty,
        secs=secs,
        s_per_mpx=secs / (px / 1024**2),
        peak=peak / 2**20,
        d_used=float(np.nanmedian(diams)) if np.isfinite(diams).any() else float("nan"),
        d_true=true_diameter(*[f[2] for f in files]),
        warns=warns,
        focus=focus if focus["of"] else None,
    )


def focus_f1(r: dict) -> str:
    f = r.get("focus")
    if not f:
        return "-"
    return f"{2 * f['tp'] / max(2 * f['tp'] + f['fp'] + f['fn'], 1):.3f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEAD = [
    "set",
    "method",
    "objects / truth",
    "count err",
    "F1@0.5",
    "matched IoU",
    "worst plane / truth",
    "most objects on a truth-empty plane",
    "diameter used / true",
    "s",
    "s per 1024^2",
    "peak MiB",
]


def line(name: str, method: str, r: dict) -> str:
    err = (r["n_pred"] - r["n_true"]) / r["n_true"] if r["n_true"] else float("nan")
    return _row(
        [
            name,
            method,
            f"{r['n_pred']} / {r['n_true']}",
            f"{err:+.1%}" if r["n_true"] else "-",
            f"{r['f1']:.3f}",
            f"{r['iou']:.3f}",
            f"{r['worst']:.2f}" if r["worst"] else "-",
            r["on_empty"],
            f"{r['d_used']:.1f} / {r['d_true']:.1f}",
            f"{r['secs']:.1f}",
            f"{r['s_per_mpx']:.2f}",
            f"{r['peak']:.0f}",
        ]
    )


def speed_lines(methods) -> list[str]:
    """Seconds per plane: a real 1024 x 1024 plane (mnfinder) and the dense 4096^2 synthetic."""
    from napari_sam3.core.synthetic import synthetic_nuclei

    out = []
    big = [img for _, img, _ in R.load_set("mnfinder") if img.shape == (1024, 1024)]
    cases = [("real 1024^2 plane (mnfinder 20x DAPI)", big[0], 3)] if big else []
    dense = synthetic_nuclei((4096, 4096), seed=42, diameter=22, coverage=0.5, touching=0.75)[0]
    cases.append(("dense synthetic 4096^2 (d = 22 px)", dense, 2))
    for name, img, reps in cases:
        for m in methods:
            wall, cpu = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                count_objects(img, m)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out.append(
                f"- {name}, {m}: CPU best {min(cpu):.2f} s, wall best {min(wall):.2f} s, median "
                f"{np.median(wall):.2f} s (no diameter given; the machine is shared, CPU is "
                "steadier)"
            )
    return out


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(x.split(":", 1)[1].strip() for x in out.splitlines() if "Model name" in x)
    except Exception:  # noqa: BLE001
        name = platform.processor() or platform.machine()
    bf16 = (
        "avx512_bf16" in Path("/proc/cpuinfo").read_text()
        if Path("/proc/cpuinfo").exists()
        else False
    )
    return f"{name}{' (avx512_bf16)' if bf16 else ''}"


LOSO_DIR = HERE / "_out" / "loso"


def _net_steps(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    return f"{meta.get('steps', '?')} steps, {meta.get('augment', 'narrow')} augmentations"


def _with_net(path: Path | None, fn):
    """Run ``fn()`` with the learned counter reading ``path`` (None: the shipped network)."""
    old = os.environ.pop(NUCLEUS_NET_ENV, None)
    if path is not None:
        os.environ[NUCLEUS_NET_ENV] = str(path)
    try:
        return fn()
    finally:
        os.environ.pop(NUCLEUS_NET_ENV, None)
        if old is not None:
            os.environ[NUCLEUS_NET_ENV] = old


SCORE_CACHE = HERE / "_out" / "loso_scores.json"


def _cached_score(key: str, fn) -> dict:
    """``fn()``, remembered in SCORE_CACHE under ``key`` (which names the weights file and its
    modification time), so that networks finishing one after another are scored once each."""
    import json

    cache = json.loads(SCORE_CACHE.read_text()) if SCORE_CACHE.is_file() else {}
    if key not in cache:
        cache[key] = fn()
        SCORE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        SCORE_CACHE.write_text(json.dumps(cache))
    return cache[key]


def leave_one_source_out(sources, loso_dir: Path, compare_dir: Path | None):
    """(summary lines, detail lines): every source scored with the network trained without it."""
    head = ["source (all images)", "planes", "true nuclei", "learned, never saw it"]
    head += [f"learned, never saw it ({compare_dir.name})"] if compare_dir else []
    head += ["classical", "baseline (true diameter)", "best"]
    head += ["recall: learned / classical / baseline", "network used"]
    summary = [_row(head), _row(["---"] * len(head))]
    detail = [_row(HEAD), _row(["---"] * len(HEAD))]
    print(summary[0], flush=True)
    for s in sources:
        try:
            files = R.load_set(s)
        except R.Unavailable as e:
            print(f"SKIPPED {s}: {e}")
            continue
        planes = sum(lab.shape[0] if lab.ndim == 3 else 1 for _, _, lab in files)
        f1, used = {}, []
        nets = [("learned", loso_dir)] + ([("compare", compare_dir)] if compare_dir else [])
        for key, folder in nets:
            path = folder / f"{s}.safetensors"
            if not path.is_file():
                f1[key] = None
                rel = os.path.relpath(path, HERE.parent)
                used.append(
                    f"{rel} missing: python training/train_nucleus_net.py --leave-out {s} "
                    f"--out {rel}"
                )
                continue
            ckey = f"{s}|learned|{path.resolve()}|{path.stat().st_mtime}"
            r = _cached_score(
                ckey, lambda p=path, f=files: _with_net(p, lambda: score(f, "learned"))
            )
            f1[key] = r
            used.append(f"{os.path.relpath(path, HERE.parent)} ({_net_steps(path)})")
            detail.append(line(s, f"learned, trained WITHOUT {s} ({folder.name})", r))
            print(detail[-1], flush=True)
        for m in ("classical", "baseline"):
            f1[m] = _cached_score(f"{s}|{m}", lambda m=m, f=files: score(f, m))
            detail.append(line(s, m, f1[m]))
            print(detail[-1], flush=True)
        n_true = f1["classical"]["n_true"]
        cells = [s, planes, n_true]
        cells += [f"{f1['learned']['f1']:.3f}" if f1["learned"] else "missing"]
        if compare_dir:
            cells += [f"{f1['compare']['f1']:.3f}" if f1["compare"] else "missing"]
        cells += [f"{f1['classical']['f1']:.3f}", f"{f1['baseline']['f1']:.3f}"]
        scored = {k: v["f1"] for k, v in f1.items() if v and k != "compare"}
        rec = " / ".join(
            f"{recall_of(f1[k]):.3f}" if f1[k] else "-"
            for k in ("learned", "classical", "baseline")
        )
        cells += [max(scored, key=scored.get), rec, "; ".join(used)]
        summary.append(_row(cells))
        print(summary[-1], flush=True)
        focus = f1["classical"].get("focus")
        if focus and focus["planes"] < focus["of"]:  # a z-stack: its in-focus planes as well
            row = [f"{s}, in-focus planes only", f"{focus['planes']} of {focus['of']}"]
            row += [focus["tp"] + focus["fn"]]
            row += [focus_f1(f1["learned"]) if f1["learned"] else "missing"]
            if compare_dir:
                row += [focus_f1(f1["compare"]) if f1["compare"] else "missing"]
            row += [focus_f1(f1["classical"]), focus_f1(f1["baseline"])]
            sharp = {k: focus_f1(v) for k, v in f1.items() if v and k != "compare"}
            row += [max(sharp, key=sharp.get), "", ""]
            summary.append(_row(row))
            print(summary[-1], flush=True)
    return summary, detail


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="*", default=list(R.SETS) + ["controls"])
    ap.add_argument(
        "--sources",
        nargs="*",
        default=list(R.FLUORESCENT),
        help="sources of the leave-one-source-out headline",
    )
    ap.add_argument("--loso-dir", type=Path, default=LOSO_DIR)
    ap.add_argument("--compare-dir", type=Path, default=None)
    ap.add_argument("--no-loso", action="store_true", help="same-source table only")
    ap.add_argument("--no-same-source", action="store_true", help="leave-one-source-out only")
    ap.add_argument(
        "--net", type=Path, default=None, help="score this network file as 'learned' (same-source)"
    )
    ap.add_argument("--loso-out", default=None, help="write the per-source detail rows here")
    ap.add_argument("--methods", nargs="*", default=["learned", "classical", "baseline"])
    ap.add_argument(
        "--side",
        choices=["test", "all"],
        default="test",
        help="score on the test images only (default) or on all (classical and baseline only)",
    )
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    ap.add_argument("--no-speed", action="store_true", help="skip the per-plane timing")
    a = ap.parse_args()
    summary, detail = (
        ([], []) if a.no_loso else leave_one_source_out(a.sources, a.loso_dir, a.compare_dir)
    )
    if a.net is not None:
        os.environ[NUCLEUS_NET_ENV] = str(a.net)  # leave_one_source_out restores the default
    lines = [_row(HEAD), _row(["---"] * len(HEAD))]
    print(lines[0], flush=True)
    warn_lines = []
    for s in [] if a.no_same_source else a.sets:
        if s == "controls":
            groups: dict[str, list] = {}
            for group, name, img, lab in R.synthetic_controls():
                groups.setdefault(group, []).append((name, img, lab))
            todo = list(groups.items())
        else:
            try:
                todo = [(s, R.load_split(s, "test") if a.side == "test" else R.load_set(s))]
            except R.Unavailable as e:
                print(f"SKIPPED {s}: {e}")
                continue
        for name, files in todo:
            for m in a.methods:
                if m == "learned" and a.side == "all" and s != "controls":
                    continue  # never scored on the images it was trained on
                if m == "baseline" and name in (
                    "pure noise",
                    "empty (camera)",
                    "empty (dim, uneven)",
                ):
                    continue  # the baseline needs a true diameter; there is none
                if m == "learned":  # the network under test changes; the others do not
                    r = score(files, m)
                else:
                    key = f"same-source|{name}|{a.side}|{m}"
                    r = _cached_score(key, lambda m=m, f=files: score(f, m))
                lines.append(line(name, m, r))
                print(lines[-1], flush=True)
                if m != "baseline" and r["warns"]:
                    uniq = sorted(
                        set(
                            w.split(": ", 1)[-1] if w.startswith("plane ") else w
                            for w in r["warns"]
                        )
                    )
                    warn_lines.append(f"- {name}, {m}: " + " / ".join(uniq[:3]))
    speed = [] if a.no_speed else speed_lines([m for m in a.methods if m != "baseline"])
    print("\n".join(speed))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f"Command: `HF_HUB_OFFLINE=1 python benchmarks/bench_real.py {' '.join(sys.argv[1:])}`"
        f"  \nCPU: {cpu_name()}, shared 2-core machine; {stamp}\n\n"
    )
    loso_text = (
        "## Leave one source out (headline)\n\nF1 at IoU 0.5 on ALL images of each source; the "
        "learned counter is the network trained without that source (no diameter given), "
        "classical gets no diameter, the baseline gets the true one.\n\n" + "\n".join(summary)
    )
    if a.loso_out and summary:
        Path(a.loso_out).write_text(
            "# Leave one source out (bench_real.py)\n\n"
            + command
            + loso_text
            + "\n\n## Every row\n\n"
            + "\n".join(detail)
            + "\n"
        )
    if a.out:
        text = (
            command
            + (loso_text + "\n\n## Same-source (NOT the headline)\n\n" if summary else "")
            + f"Images: {a.side} side of real_sets.split_of: other frames / files of the "
            f"sources the {'network ' + str(a.net) if a.net else 'shipped network'} was "
            "trained on\n\n"
            + "\n".join(lines)
            + "\n\nWarnings:\n"
            + "\n".join(warn_lines)
            + "\n\nSpeed (one process):\n"
            + "\n".join(speed)
            + "\n"
        )
        Path(a.out).write_text(text)
    print("\n".join(warn_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
