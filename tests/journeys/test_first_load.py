"""The first model load after a viewer exists must not kill the process (triton vs Mesa's LLVM).

Fresh interpreter, nothing of torch / transformers imported before the viewer, exactly as a user who
opened napari and then the plugin: see `napari_sam3.core.sam3.triton_isolation`.
"""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

CHILD = textwrap.dedent(
    """
    import sys
    import napari
    import numpy as np

    assert "torch" not in sys.modules and "transformers" not in sys.modules
    viewer = napari.Viewer(show=False)
    viewer.add_image(np.zeros((32, 32), np.uint8))
    viewer.screenshot()  # the OpenGL context (and Mesa's LLVM) exist now
    from napari_sam3.core.sam3.loading import load_model

    loaded = load_model(sys.argv[1], device="cpu")
    import torchvision.ops  # noqa: F401  (what crashed before)

    print("loaded", type(loaded.model).__name__)
    viewer.close()
    """
)


def test_model_loads_after_a_viewer_exists(tiny_checkpoint):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "loaded Sam3VideoModel" in proc.stdout
