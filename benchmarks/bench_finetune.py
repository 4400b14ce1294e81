"""Fine-tuning on a user's labels, per source: a network that never saw the source, fine-tuned on
3 of its labelled planes (`core.learned.finetune`, the Count tab's "Train on these labels" and
`napari-sam3 train`), scored on the source's other planes beside the base and classical counters.

    nice -n 10 python benchmarks/bench_finetune.py                       # every source at hand
    nice -n 10 python benchmarks/bench_finetune.py --sets cho3dt scratch --steps 200

Base network per source: benchmarks/_out/loso/<set>.safetensors (trained without that source,
bench_leave_out.py) when it exists, else the shipped network for sources it never trained on
(cho3dt); sources the shipped network trained on without a leave-out file are skipped. F1 at IoU
0.5 (one-to-one), pooled over the scored planes, no diameter given (estimated, as a user counts).
Writes benchmarks/results_finetune.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_sets as R  # noqa: E402

from napari_sam3.core.counting.count import count_objects  # noqa: E402
from napari_sam3.core.defaults import FINETUNE_STEPS  # noqa: E402
from napari_sam3.core.learned.finetune import finetune  # noqa: E402
from napari_sam3.core.learned.model_file import SHIPPED, read_metadata  # noqa: E402
from napari_sam3.core.results.measure import match_labels  # noqa: E402
from napari_sam3.io.network_file import save_network  # noqa: E402

LOSO = HERE / "_out" / "loso"
OUT = HERE / "_out" / "finetune"
NOT_NUCLEI = ("trpl_phase",)  # phase-contrast bacteria


def planes_of(name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for fname, img, lab in R.load_set(name):
        if lab.ndim == 3:
            out += [(f"{fname}[{k}]", img[k], lab[k]) for k in range(lab.shape[0]) if lab[k].any()]
        elif lab.any():
            out.append((fname, img, lab))
    return out


def base_for(name: str) -> Path | None:
    if (LOSO / f"{name}.safetensors").is_file():
        return LOSO / f"{name}.safetensors"
    seen = read_metadata(SHIPPED).get("trained_on", "")
    return None if f'"{name}:' in seen else SHIPPED


def f1(planes, **kw) -> float:
    tp = fp = fn = 0
    for _, img, lab in planes:
        m = match_labels(lab, count_objects(img, **kw).labels)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def write_table(rows, a, argv) -> str:
    head = (
        "| source | base net | fine-tuned on | scored on | base F1 | fine-tuned F1 | classical F1 "
        "| held-out F1 (in-run) | selected | train time |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['source']} | {r['base']} | {r['train']} | {r['test']} | {r['base_f1']:.3f} | "
        f"{r['tuned_f1']:.3f} | {r['classical_f1']:.3f} | {r['held']} | "
        f"{'yes' if r['better'] else 'no (base kept)'} | {r['seconds']:.0f} s |"
        for r in rows
    ]
    cmd = "nice -n 10 python benchmarks/bench_finetune.py " + " ".join(argv or sys.argv[1:])
    text = (
        "# Fine-tuning on 3 labelled planes of a source the network never saw\n\n"
        f"`{cmd.strip()}` ({a.steps} steps, batch 8, lr 1e-3; 2 CPU cores shared with other "
        "jobs, so times are upper bounds). F1 at IoU 0.5, pooled over the scored planes, "
        "diameter estimated. Train time includes scoring the held-out part before and after.\n\n"
        + head
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    a.out.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=FINETUNE_STEPS)
    ap.add_argument("--train", type=int, default=3, help="labelled planes to fine-tune on")
    ap.add_argument("--max-test", type=int, default=12, help="scored planes per source (spread)")
    ap.add_argument("--out", type=Path, default=HERE / "results_finetune.md")
    a = ap.parse_args(argv)
    cached = sorted(p.stem for p in R.CACHE.glob("*.npz"))
    names = a.sets or [n for n in cached if n not in NOT_NUCLEI]
    rows = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        base = base_for(name)
        if base is None:
            print(f"{name}: skipped (the shipped network trained on it; no leave-out network)")
            continue
        planes = planes_of(name)
        if len(planes) < a.train + 1:
            print(f"{name}: skipped ({len(planes)} labelled planes)")
            continue
        # spread choices over the set (time-lapses and stacks change along their frames)
        pick = np.linspace(0, len(planes) - 1, a.train + 2).round().astype(int)[1:-1]
        train = [planes[i] for i in pick]
        rest = [p for i, p in enumerate(planes) if i not in set(pick.tolist())]
        test = [
            rest[i]
            for i in np.linspace(0, len(rest) - 1, min(a.max_test, len(rest))).round().astype(int)
        ]
        n_train = sum(len(np.unique(lab)) - 1 for _, _, lab in train)
        n_test = sum(len(np.unique(lab)) - 1 for _, _, lab in test)
        t0 = time.perf_counter()
        res = finetune(train, base=base, steps=a.steps)
        secs = time.perf_counter() - t0
        path = save_network(res.net, OUT / f"{name}.safetensors", res.meta, overwrite=True)
        row = {
            "source": name,
            "base": "leave-out" if base != SHIPPED else "shipped",
            "train": f"{len(train)} planes, {n_train} nuclei",
            "test": f"{len(test)} planes, {n_test} nuclei",
            "base_f1": f1(test, net=str(base)),
            "tuned_f1": f1(test, net=str(path)),
            "classical_f1": f1(test, method="classical"),
            "held": f"{res.f1_before:.3f} -> {res.f1_after:.3f}",
            "better": res.better,
            "seconds": secs,
        }
        rows.append(row)
        print(row, flush=True)
        write_table(rows, a, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
