"""Per-plane signals for choosing between the two counters WITHOUT ground truth (issue 18).

    HF_HUB_OFFLINE=1 python benchmarks/bench_choice.py            # writes _out/choice_planes.json

For every labelled nucleus source, the network trained WITHOUT it (benchmarks/_out/loso/S) and the
classical counter count every plane as a user runs them (no diameter); per plane we keep F1 of each
against the truth and the signals a per-image choice could use: the agreement F1 between the two
counters and their counts. `choice_rules` then scores candidate rules leave-one-source-out (a rule's
threshold is picked on the other sources only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real as BR  # noqa: E402
import real_sets as R  # noqa: E402

from napari_sam3.core.results.measure import match_labels  # noqa: E402

OUT = BR.HERE / "_out" / "choice_planes.json"


def planes_of(set_name: str) -> list[dict]:
    rows = []
    for name, img, truth in R.load_set(set_name):
        labs = {}
        for m in ("learned", "classical", "baseline"):
            run = lambda m=m, i=img, t=truth: BR.run_method(m, i, t)  # noqa: E731
            lab, _d, _w = (
                BR._with_net(BR.LOSO_DIR / f"{set_name}.safetensors", run)
                if m == "learned"
                else run()
            )
            labs[m] = lab if lab.ndim == 3 else lab[None]
        tr = truth if truth.ndim == 3 else truth[None]
        for i, t in enumerate(tr):
            row = {"set": set_name, "file": name, "plane": i}
            for m, lab in labs.items():
                r = match_labels(t, lab[i])
                row[m] = {k: r[k] for k in ("tp", "fp", "fn", "n_true", "n_pred")}
            a = match_labels(labs["classical"][i], labs["learned"][i])
            row["agree"] = {k: a[k] for k in ("tp", "fp", "fn", "n_true", "n_pred")}
            rows.append(row)
        print(set_name, name, len(tr), flush=True)
    return rows


def _f1(rows: list[dict], pick) -> float:
    tp = fp = fn = 0
    for r in rows:
        m = r[pick(r)]
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
    return 2 * tp / max(2 * tp + fp + fn, 1)


def _plane_f1(m: dict) -> float:
    return 2 * m["tp"] / max(2 * m["tp"] + m["fp"] + m["fn"], 1)


def report(data: dict) -> list[str]:
    """The table: each counter, and the BEST per-plane choice between the two counters with the
    truth known (an oracle: the ceiling of any ground-truth-free per-image choice)."""
    lines = [
        "| source (leave-one-source-out network) | planes | learned | classical "
        "| per-plane oracle (learned or classical) | baseline (true diameter) "
        "| agreement learned~classical (median F1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, rows in data.items():
        best = _f1(
            rows,
            lambda r: (
                "learned" if _plane_f1(r["learned"]) >= _plane_f1(r["classical"]) else "classical"
            ),
        )
        agree = np.median([_plane_f1(r["agree"]) for r in rows])
        cells = [s, len(rows), _f1(rows, lambda r: "learned"), _f1(rows, lambda r: "classical")]
        cells += [best, _f1(rows, lambda r: "baseline"), agree]
        lines.append(
            "| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )
    return lines


RATIOS = (0.8, 0.85, 0.9, 0.95, 0.97, 1.0, 1.03)


def _ratio_rule(t: float):
    """Classical on a plane where it finds fewer than ``t`` x the network's objects."""
    return lambda r: (
        "classical" if r["classical"]["n_pred"] < t * r["learned"]["n_pred"] else "learned"
    )


def loso_rule(data: dict) -> list[str]:
    """The count-ratio rule with ``t`` chosen on the OTHER sources (mean F1), scored on this one."""
    lines = [
        "| held-out source | t chosen on the other sources | rule | learned | classical |",
        "|---|---|---|---|---|",
    ]
    for s, rows in data.items():
        others = [o for o in data if o != s]
        t = max(RATIOS, key=lambda t: np.mean([_f1(data[o], _ratio_rule(t)) for o in others]))
        cells = [s, t, _f1(rows, _ratio_rule(t)), _f1(rows, lambda r: "learned")]
        cells += [_f1(rows, lambda r: "classical")]
        lines.append(
            "| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )
    return lines


def main() -> int:
    sets = sys.argv[1:] or [s for s in R.SETS if s != "trpl_phase"]
    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for s in sets:
        if s not in data:
            data[s] = planes_of(s)
            OUT.write_text(json.dumps(data))
    print("\n".join(report({s: data[s] for s in sets})))
    print()
    print("\n".join(loso_rule({s: data[s] for s in sets})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
