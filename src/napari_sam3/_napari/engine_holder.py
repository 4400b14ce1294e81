"""The loaded engine the tabs and sessions share; it loads lazily, inside a worker. No Qt."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from napari_sam3.core.progress import Progress


class EngineHolder:
    """The loaded engine shared by the widget's tabs; loads lazily inside a worker.

    ``loader`` (default ``Sam3Engine.load``) is called as ``loader(source=..., device=...)``.
    ``adapter`` (a file path or a `core.sam3.adapter.Sam3Adapter`, None for the base model) is put
    on the engine before every run that asks for it.
    """

    def __init__(self, loader: Callable[..., Any] | None = None) -> None:
        self._loader = loader
        self.engine: Any = None
        self.key: tuple[str, str] | None = None
        self.adapter: Any = None
        # (source, device, message) of the last load that failed: the Model section says so
        self.failed: tuple[str, str, str] | None = None

    def is_loaded(self, source: str, device: str) -> bool:
        return self.engine is not None and self.key == (source, device)

    def iter_engine(self, source: str, device: str):
        """Generator (for a worker): yields a progress report while loading, returns the engine."""
        if self.is_loaded(source, device):
            self._apply_adapter(self.engine)
            return self.engine
        yield Progress(f"Loading SAM3 model {source!r} on {device} (first run only)...")
        loader = self._loader
        if loader is None:
            from napari_sam3.core.sam3.engine import Sam3Engine

            loader = Sam3Engine.load
        try:
            engine = loader(source=source or None, device=device)
        except Exception as exc:
            self.failed = (source, device, str(exc))
            raise
        self.engine, self.key, self.failed = engine, (source, device), None
        self._apply_adapter(engine)
        yield Progress(f"Model loaded on {getattr(engine, 'device', device)}.")
        return engine

    def _apply_adapter(self, engine) -> None:
        """The chosen adapter on the engine (a wrong file raises `Sam3Error` in the run)."""
        if not hasattr(engine, "set_adapter"):
            return
        current, wanted = engine.adapter, self.adapter
        if isinstance(wanted, (str, os.PathLike)):
            wanted = os.path.abspath(wanted)
            if current is not None and current.meta.get("file") == wanted:
                return
        elif current is wanted:
            return
        engine.set_adapter(wanted)
