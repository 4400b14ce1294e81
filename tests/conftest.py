"""Shared test setup: offline hub, torch imported first, a tiny SAM3 checkpoint and an engine on it.

Fixtures for everyone's tests:
    tiny_checkpoint   Path of a tiny random SAM3 checkpoint (facebook/sam3 layout), built once.
    engine            Sam3Engine on it, cpu, float32 (shared: use stats deltas or reset_stats()).
    tiny_model_env    sets $NAPARI_SAM3_MODEL to the tiny checkpoint for the test (CLI, widget).
"""

import os

# Before anything can import huggingface_hub / transformers: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The engine fixture is compared with plain transformers to 1e-5 (test_parity): keep float32.
# The bf16 CPU fast path has its own tests (test_acceleration.py).
os.environ.setdefault("NAPARI_SAM3_CPU_FAST", "off")

# torch imported after a QApplication exists can crash (pytorch issue 11326): import it first.
import pytest  # noqa: E402
import torch  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """A tiny random SAM3 checkpoint folder, built offline once per process (a few seconds)."""
    from napari_sam3.testing import tiny_checkpoint_dir

    return tiny_checkpoint_dir()


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """A Sam3Engine on the tiny checkpoint (cpu, float32), shared by the session."""
    from napari_sam3.core.sam3.engine import Sam3Engine

    return Sam3Engine.load(str(tiny_checkpoint), device="cpu")


@pytest.fixture
def tiny_model_env(tiny_checkpoint, monkeypatch):
    """$NAPARI_SAM3_MODEL points at the tiny checkpoint for the duration of one test."""
    monkeypatch.setenv("NAPARI_SAM3_MODEL", str(tiny_checkpoint))
    return tiny_checkpoint
