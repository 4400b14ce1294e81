"""benchmarks/bench_speed.py keeps running: the --tiny suite prints the table with every step.

Timings are not checked (the machine is shared); only that the command works end to end.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_speed.py"

STEPS = [
    "image encode",
    "first concept (cached image)",
    "each further concept",
    "repeat concept (cached text)",
    "tracker image embeddings",
    "first click (cached image)",
    "click (next)",
    "backbone passes for text + clicks",
    "masks -> label image + table",
    "classical count",
]


@pytest.mark.slow
def test_tiny_bench_prints_the_table(tmp_path):
    out = tmp_path / "table.md"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--sizes",
        "640x480",
        "2048x2048-tiled",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "| image | step | ours | plain transformers | ours / plain | note |" in text
    for step in STEPS:
        assert f"| 640x480 | {step} |" in text, step
    assert "| 2048x2048 tiled | per tile: encode + concept |" in text
    assert "tiled count path (iter_count); backbone passes per tile: 1/1/1/1/1/1/1/1/1" in text
    # the fast path's gain on a plain image and per tile, side by side
    assert "Ours / plain, plain image (640x480) | per tile (2048x2048 tiled" in text
    assert "- encode: " in text and "- encode + first concept: " in text
    assert "| 2048x2048 tiled | whole image (9 tiles) |" in text
    assert "peak memory, ours" in text
    assert "- one backbone pass per image for text + clicks: 1 (plain: 2) -> PASS" in text
    assert "| image | step |" in out.read_text(encoding="utf-8")


def test_size_parsing_and_checkpoint_choice():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_speed
    finally:
        sys.path.pop(0)
    assert bench_speed.parse_size("1024x768") == (768, 1024, False)
    assert bench_speed.parse_size("2048x2048-tiled") == (2048, 2048, True)
    assert bench_speed.fmt_seconds(0.0123) == "12.3 ms"
    assert bench_speed.fmt_seconds(2.5) == "2.50 s"


@pytest.mark.slow
def test_tiny_encoder_study_prints_the_agreement_table():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--encoder-study", "--modes", "off", "bf16",
           "--reps", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| mode | first call | median | vs reference |" in proc.stdout
    assert "| off |" in proc.stdout and "| bf16 |" in proc.stdout
