"""Fine-tuning on a user's labels, per source: a network that never saw the source, fine-tuned on
3 of its labelled planes (`core.learned.finetune`, the Count tab's "Train on these labels" and
`napari-sam3 train`), scored on the source's other planes beside the base and classical counters.

    nice -n 10 python benchmarks/bench_finetune.py                      # every source at hand
    nice -n 10 python benchmarks/bench_finetune.py --sets scratch hela --variant 500 500:0.01
    python benchmarks/bench_finetune.py --table-only --variant 200 500 500:0.01  # rebuild table

A variant is STEPS[:ANCHOR] (anchor: the L2-SP pull toward the base weights, 0 none).

Base network per source: benchmarks/_out/loso/<set>.safetensors (trained without that source,
bench_leave_out.py) when it exists, else the shipped network for sources it never trained on
(cho3dt); sources the shipped network trained on without a leave-out file are skipped. F1 at IoU
0.5 (one-to-one), pooled over the scored planes, no diameter given (estimated, as a user counts).
"user gets" is what a user counts with after the in-run check: the fine-tuned network when it was
selected, else the base. Base and classical scores are cached in _out/finetune3/scores.json (they
do not depend on the fine-tuning); each run's row is kept in _out/finetune3/rows.jsonl (one per
source and variant, the latest wins) and the table in benchmarks/results_finetune.md shows the
asked variants side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_sets as R  # noqa: E402

from napari_sam3.core.counting.count import count_objects  # noqa: E402
from napari_sam3.core.defaults import (  # noqa: E402
    FINETUNE_ANCHOR,
    FINETUNE_BATCH,
    FINETUNE_HOLD_OUT,
    FINETUNE_LR,
    FINETUNE_STEPS,
)
from napari_sam3.core.learned.finetune import finetune  # noqa: E402
from napari_sam3.core.learned.model_file import SHIPPED, file_sha256, read_metadata  # noqa: E402
from napari_sam3.core.results.measure import match_labels  # noqa: E402
from napari_sam3.io.network_file import save_network  # noqa: E402

LOSO = HERE / "_out" / "loso"
OUT = HERE / "_out" / "finetune3"  # fine-tuned networks, rows, cached base/classical scores
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


def cached_f1(key: str, planes, **kw) -> float:
    """F1 of a counter that the fine-tuning does not change (base, classical), cached by key."""
    path = OUT / "scores.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key not in cache:
        cache[key] = f1(planes, **kw)
        path.write_text(json.dumps(cache, indent=1))
    return cache[key]


def variant_of(text: str) -> tuple[int, float]:
    steps, _, anchor = text.partition(":")
    return int(steps), float(anchor or 0)


def variant_name(steps: int, anchor: float) -> str:
    return f"{steps} steps" + (f", anchor {anchor:g}" if anchor else "")


def load_rows() -> dict[tuple[str, str], dict]:
    path = OUT / "rows.jsonl"
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(r["source"], r["variant"])] = r
    return rows


def write_table(names, variants, a, argv) -> str:
    rows = load_rows()
    head = (
        "| source | fine-tuned on | scored on | variant | base F1 | fine-tuned F1 | classical F1 "
        "| in-run check: held-out F1, errors fixed/made | selected | user gets | train time |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines, tally = (
        [],
        {v: [0, 0, 0, 0] for v in variants},
    )  # runs, user gains, user loses, tuned<base
    for name in names:
        for v in variants:
            r = rows.get((name, v))
            if r is None:
                continue
            gain = r["user_f1"] - r["base_f1"]
            t = tally[v]
            t[0], t[1], t[2] = t[0] + 1, t[1] + (gain > 0), t[2] + (gain < 0)
            t[3] += r["tuned_f1"] < r["base_f1"]
            lines.append(
                f"| {r['source']} | {r['train']} | {r['test']} | {v} | {r['base_f1']:.3f} | "
                f"{r['tuned_f1']:.3f} ({r['tuned_f1'] - r['base_f1']:+.3f}) | "
                f"{r['classical_f1']:.3f} | {r['held']} | "
                f"{'yes' if r['better'] else 'no (base kept)'} | {r['user_f1']:.3f} "
                f"({gain:+.3f}) | {r['seconds']:.0f} s |"
            )
    summary = "\n".join(
        f"- {v}: {t[0]} sources; the user gains on {t[1]}, loses on {t[2]}; the fine-tuned "
        f"network itself is below the base on {t[3]}."
        for v, t in tally.items()
    )
    cmd = "nice -n 10 python benchmarks/bench_finetune.py " + " ".join(argv or sys.argv[1:])
    text = (
        "# Fine-tuning on 3 labelled planes of a source the network never saw\n\n"
        f"`{cmd.strip()}` (batch {FINETUNE_BATCH}, lr {a.lr:g}; variant: steps and anchor, the "
        "L2-SP pull toward the base weights, loss += anchor * sum ||w - w_base||^2; held out in "
        f"the run: the last {FINETUNE_HOLD_OUT:.0%} of each plane; 2 CPU cores shared with other "
        "jobs, so times are upper bounds). Base: the leave-one-source-out network without the "
        "source. F1 at IoU 0.5, pooled over the scored planes (the source's other planes), "
        "diameter estimated; fine-tuned F1 with its change vs the base. Train time includes "
        "scoring the held-out strips before and after. "
        '"user gets": the fine-tuned F1 when the in-run check selected it, else the base\'s '
        "(change vs the base in brackets).\n\n"
        + head
        + "\n"
        + "\n".join(lines)
        + "\n\n"
        + summary
        + "\n"
    )
    print(text)
    a.out.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument(
        "--variant",
        nargs="*",
        default=[f"{FINETUNE_STEPS}:{FINETUNE_ANCHOR:g}"],
        help="STEPS[:ANCHOR] per variant (default: the shipped defaults)",
    )
    ap.add_argument("--lr", type=float, default=FINETUNE_LR)
    ap.add_argument("--train", type=int, default=3, help="labelled planes to fine-tune on")
    ap.add_argument("--max-test", type=int, default=12, help="scored planes per source (spread)")
    ap.add_argument("--out", type=Path, default=HERE / "results_finetune.md")
    ap.add_argument("--table-only", action="store_true", help="rebuild the table from the rows")
    a = ap.parse_args(argv)
    cached = sorted(p.stem for p in R.CACHE.glob("*.npz"))
    names = a.sets or [n for n in cached if n not in NOT_NUCLEI]
    variants = [variant_of(v) for v in a.variant]
    OUT.mkdir(parents=True, exist_ok=True)
    if a.table_only:
        write_table(names, [variant_name(*v) for v in variants], a, argv)
        return 0
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
        key = f"{name}|{file_sha256(base)[:16]}|{len(test)}"
        base_f1 = cached_f1(f"{key}|base", test, net=str(base))
        classical_f1 = cached_f1(f"{key}|classical", test, method="classical")
        for steps, anchor in variants:
            t0 = time.perf_counter()
            res = finetune(train, base=base, steps=steps, lr=a.lr, anchor=anchor)
            secs = time.perf_counter() - t0
            net_file = OUT / f"{name}_{steps}_{a.lr:g}_a{anchor:g}.safetensors"
            path = save_network(res.net, net_file, res.meta, overwrite=True)
            tuned = f1(test, net=str(path))
            row = {
                "source": name,
                "variant": variant_name(steps, anchor),
                "base": "leave-out" if base != SHIPPED else "shipped",
                "train": f"{len(train)} planes, {n_train} nuclei",
                "test": f"{len(test)} planes, {n_test} nuclei",
                "base_f1": base_f1,
                "tuned_f1": tuned,
                "classical_f1": classical_f1,
                "held": f"{res.f1_before:.3f} -> {res.f1_after:.3f} on {res.held_objects}, "
                f"{res.fixed}/{res.made}",
                "better": res.better,
                "user_f1": tuned if res.better else base_f1,
                "seconds": secs,
            }
            print(row, flush=True)
            with open(OUT / "rows.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            write_table(names, [variant_name(*v) for v in variants], a, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
