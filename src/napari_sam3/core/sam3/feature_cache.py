"""Image-embedding cache: least recently used, bounded in bytes, thread-safe.

Keys combine the plane's content hash, the model (source, weights folder, dtype) and the
preprocessing, so a changed contrast setting or another model never returns stale features
(micro-sam's lesson). Values are the engine's `EncodedImage` objects; their ``nbytes`` counts
against the bound. The newest entry is always kept, even if it alone exceeds the bound.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import astuple
from typing import Any

from napari_sam3.core.images import Preprocessing

ENV_CACHE_MB = "NAPARI_SAM3_CACHE_MB"
DEFAULT_MAX_BYTES = 2 * 1024**3  # about 8 full-size SAM3 images in fp32
DEFAULT_MAX_ITEMS = 64


def default_max_bytes() -> int:
    """``$NAPARI_SAM3_CACHE_MB`` in MiB if set, else 2 GiB."""
    env = os.environ.get(ENV_CACHE_MB, "").strip()
    if env:
        try:
            return max(0, int(float(env) * 1024**2))
        except ValueError:
            pass
    return DEFAULT_MAX_BYTES


def make_key(
    content_hash: str, model_key: str, preprocessing: Preprocessing, rgb: bool | None = None
) -> str:
    """The cache key of one plane under one model and one preprocessing."""
    return f"{content_hash}|{model_key}|{astuple(preprocessing)!r}|rgb={rgb}"


class FeatureCache:
    """An LRU mapping bounded by total ``nbytes`` and by item count."""

    def __init__(self, max_bytes: int | None = None, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self.max_items = int(max_items)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int | None = None) -> None:
        size = int(nbytes if nbytes is not None else getattr(value, "nbytes", 0))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            self._evict()

    def _evict(self) -> None:
        while len(self._items) > 1 and (
            self._bytes > self.max_bytes or len(self._items) > self.max_items
        ):
            _, (_, size) = self._items.popitem(last=False)
            self._bytes -= size
            self.evictions += 1
        if self.max_bytes <= 0 or self.max_items <= 0:  # caching switched off
            self._items.clear()
            self._bytes = 0

    def resize(self, max_bytes: int | None = None, max_items: int | None = None) -> None:
        with self._lock:
            if max_bytes is not None:
                self.max_bytes = int(max_bytes)
            if max_items is not None:
                self.max_items = int(max_items)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)


__all__ = ["DEFAULT_MAX_BYTES", "ENV_CACHE_MB", "FeatureCache", "default_max_bytes", "make_key"]
