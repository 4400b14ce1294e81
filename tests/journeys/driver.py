"""Runs inside a journey's fresh Python process: napari first, then the widget through npe2.

Imported by the journey scripts (``python tests/journeys/journey_*.py OUT_DIR``), never by pytest's
own process. Nothing of torch / transformers may be imported before the viewer exists: that is how
a user starts (napari, then Plugins > SAM3), and what the suite once missed.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

assert not {"torch", "transformers", "torchvision", "triton"} & set(sys.modules), sys.modules.keys()

import napari  # noqa: E402
import numpy as np  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

TIMEOUT_S = 120


class Journey:
    """A viewer with the SAM3 dock opened the way the Plugins menu does, and helpers to drive it."""

    def __init__(self, out_dir: str) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.viewer = napari.Viewer(title="journey")
        self.viewer.window.resize(1280, 960)  # xvfb-run's screen is 1280 x 1024
        self.notes: list[str] = []
        from napari.utils.notifications import notification_manager

        notification_manager.notification_ready.connect(
            lambda n: self.notes.append(f"{n.severity}: {n.message}")
        )
        self.shots = 0
        self._lap = time.perf_counter()

    def open_dock(self) -> None:
        """Plugins > SAM3: napari builds the widget through npe2 and hands it a proxy viewer."""
        _, self.widget = self.viewer.window.add_plugin_dock_widget("napari-sam3", "SAM3")
        assert type(self.widget).__name__ == "Sam3Widget", type(self.widget)
        self.widget.device_combo.setCurrentText("cpu")
        self.seg = self.widget.segment_tab
        self.count = self.widget.count_tab
        self.process(0.3)

    # ------------------------------------------------------------------ driving
    def process(self, seconds: float = 0.05) -> None:
        end = time.perf_counter() + seconds
        app = QApplication.instance()
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    def wait(self, until=lambda: True, what: str = "the run", timeout: float = TIMEOUT_S) -> None:
        """Process events until the widget is idle and ``until()`` holds."""
        end = time.perf_counter() + timeout
        self.process(0.1)
        while time.perf_counter() < end:
            self.process(0.02)
            if self.widget.idle and until():
                self.process(0.05)  # deferred layer adds, repaint
                return
        raise AssertionError(f"timed out waiting for {what}; notes: {self.notes}")

    def layer(self, name: str):
        assert name in self.viewer.layers, (
            f"no layer {name!r}: {[ly.name for ly in self.viewer.layers]}"
        )
        return self.viewer.layers[name]

    def layer_names(self) -> list[str]:
        return [ly.name for ly in self.viewer.layers]

    def errors(self) -> list[str]:
        return [n for n in self.notes if n.lower().startswith(("error", "warning"))]

    def screenshot(self, name: str) -> Path:
        self.shots += 1
        path = self.out / f"{self.shots:02d}_{name}.png"
        self.viewer.screenshot(str(path), canvas_only=False, flash=False)
        return path

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        print(f"step {what}: {now - self._lap:.1f} s", flush=True)
        self._lap = now

    def finish(self) -> None:
        print(f"JOURNEY OK ({self.shots} screenshots in {self.out})", flush=True)


def blobs(shape=(96, 112), centers=((24, 30), (60, 80), (45, 45)), seed=0) -> np.ndarray:
    """Bright round cells on a noisy dark background (uint8)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, shape)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    for cy, cx in centers:
        img[..., (yy - cy) ** 2 + (xx - cx) ** 2 < 90] += 120
    return img.clip(0, 255).astype(np.uint8)


def run(steps) -> None:
    """Run ``steps(journey)`` with the output folder from argv; exit 1 with the traceback on failure."""
    journey = Journey(sys.argv[1])
    try:
        steps(journey)
        journey.finish()
    except BaseException:  # noqa: BLE001 - report everything to the parent test
        traceback.print_exc()
        try:
            journey.screenshot("failure")
        except Exception:  # noqa: BLE001
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        import os

        os._exit(1)
    import os

    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of Qt / torch threads: the journey is what is tested
