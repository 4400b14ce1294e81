"""The loaded engine the tabs and sessions share; it loads lazily, inside a worker. No Qt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_sam3.core.progress import Progress


class EngineHolder:
    """The loaded engine shared by the widget's tabs; loads lazily inside a worker.

    ``loader`` (default ``Sam3Engine.load``) is called as ``loader(source=..., device=...)``.
    """

    def __init__(self, loader: Callable[..., Any] | None = None) -> None:
        self._loader = loader
        self.engine: Any = None
        self.key: tuple[str, str] | None = None

    def is_loaded(self, source: str, device: str) -> bool:
        return self.engine is not None and self.key == (source, device)

    def iter_engine(self, source: str, device: str):
        """Generator (for a worker): yields a progress report while loading, returns the engine."""
        if self.is_loaded(source, device):
            return self.engine
        yield Progress(f"Loading SAM3 model {source!r} on {device} (first run only)...")
        loader = self._loader
        if loader is None:
            from napari_sam3.core.sam3.engine import Sam3Engine

            loader = Sam3Engine.load
        engine = loader(source=source or None, device=device)
        self.engine, self.key = engine, (source, device)
        yield Progress(f"Model loaded on {getattr(engine, 'device', device)}.")
        return engine
