"""Provenance for exports: what made these files (source, slice, model, prompts, thresholds, versions)."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata as _md

PACKAGES = (
    "napari-sam3",
    "numpy",
    "torch",
    "transformers",
    "tifffile",
    "pycocotools",
    "scikit-image",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape the result (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(
    *,
    source: str | None = None,
    slice_label: str | None = None,
    model: str | None = None,
    prompts: list | None = None,
    exemplars: list | None = None,
    threshold: float | None = None,
    mask_threshold: float | None = None,
    method: str | None = None,
    **extra,
) -> dict:
    """One manifest entry; keys with value None are left out."""
    entry = {
        "source": source,
        "slice": slice_label,
        "model": model,
        "method": method,
        "prompts": prompts,
        "exemplars": exemplars,
        "threshold": threshold,
        "mask_threshold": mask_threshold,
        **extra,
        "versions": package_versions(),
        "date": now_iso(),
    }
    return {k: v for k, v in entry.items() if v is not None}
