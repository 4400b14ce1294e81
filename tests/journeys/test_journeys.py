"""User journeys: each in a FRESH Python process, launched the way people launch the plugin.

The child (``journey_*.py``, driven by ``driver.py``) imports nothing of torch / transformers before
it opens a napari viewer, adds the widget through npe2 (``add_plugin_dock_widget("napari-sam3",
"SAM3")``, so it gets napari's proxy viewer) and loads the model from the widget ($NAPARI_SAM3_MODEL =
the tiny checkpoint built here, in the parent). It asserts on what a person sees (layers, features,
status text) and keeps a screenshot per step in the test's tmp folder. A segfault on the first model
load after the viewer exists (triton vs Mesa's LLVM, see `core.sam3.triton_isolation`) shows here
as exit code -11.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]  # each journey is a fresh napari process

HERE = Path(__file__).parent


def run_journey(script: str, checkpoint, out: Path) -> str:
    env = {**os.environ, "NAPARI_SAM3_MODEL": str(checkpoint), "HF_HUB_OFFLINE": "1"}
    env.pop("NAPARI_SAM3_SYNC", None)  # real workers, as in napari
    proc = subprocess.run(
        [sys.executable, str(HERE / script), str(out)],
        capture_output=True,
        text=True,
        timeout=560,  # under the 600 s per-test limit; the adapt journey trains 150 steps
        env=env,
        cwd=HERE,
    )
    log = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode != -11, "segfault (was triton imported after the viewer?)\n" + log
    assert proc.returncode == 0 and "JOURNEY OK" in proc.stdout, log
    shots = sorted(out.glob("*.png"))
    assert shots and all(p.stat().st_size > 10_000 for p in shots), shots
    return proc.stdout


def test_segment_journey(tiny_checkpoint, tmp_path):
    """Text (two concepts), a click -> 3 candidates -> Sign -> cycle -> commit -> undo, positive and
    negative exemplar boxes, a box prompt, a hand edit kept through every re-filter control, Export."""
    run_journey("journey_segment.py", tiny_checkpoint, tmp_path)


def test_stack_journey(tmp_path):
    """Track through slices, Count classical and SAM3 (without and with an exemplar box), table + CSV."""
    from napari_sam3.testing import tiny_checkpoint_dir

    run_journey("journey_stack.py", tiny_checkpoint_dir(video=True), tmp_path)


def test_annotate_journey(tmp_path):
    """Review (accept / reject) then Export without the rejected object, exemplars from one image
    used on another, a clicked object propagated through a stack."""
    from napari_sam3.testing import tiny_checkpoint_dir

    run_journey("journey_annotate.py", tiny_checkpoint_dir(video=True), tmp_path)


@pytest.mark.slow
def test_first_user_journey(tiny_checkpoint, tmp_path):
    """The README's first-user path: sample, Count, Segment, commit, review, File > Save, Export."""
    out = run_journey("journey_first_user.py", tiny_checkpoint, tmp_path)
    assert "STATUS segment:" in out


@pytest.mark.slow
def test_train_journey(tiny_checkpoint, tmp_path):
    """Count the sample, correct it by hand, Train on these labels, count with the new network."""
    run_journey("journey_train.py", tiny_checkpoint, tmp_path)
