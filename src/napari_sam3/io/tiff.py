"""Label images (and raw planes) as compressed TIFF, with axes and physical pixel size.

uint16 labels are written as ImageJ hyperstacks (Fiji opens them with the right calibration:
``resolution`` tags for x/y, ``spacing`` for z, ``unit``). ImageJ has no 32-bit integer type, so
uint32 labels (65,535 objects or more) are written as plain TIFF with the resolution tags in
centimetres and the scale in tifffile's JSON description. Both load back with `read_labels_tiff`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io._files import open_tiff
from napari_sam3.io.atomic import atomic_path

COMPRESSION = "zlib"  # Adobe deflate: Fiji, QuPath, tifffile and libtiff all read it
_UNIT_TO_CM = {"micron": 1e-4, "um": 1e-4, "µm": 1e-4, "nm": 1e-7, "mm": 0.1, "cm": 1.0}


@dataclass(frozen=True)
class TiffLabels:
    """A label image read back: data, axes (e.g. ``"YX"``, ``"ZYX"``), per-axis scale and unit."""

    data: np.ndarray
    axes: str
    scale: tuple[float, ...] | None
    unit: str | None
    metadata: dict


def label_dtype(labels: np.ndarray) -> np.dtype:
    """uint16 when every id fits, else uint32 (labels must be non-negative integers)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.dtype(np.uint16)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise Sam3Error(f"Labels must be integers, got {labels.dtype}.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise Sam3Error("Labels must be non-negative (0 is background).")
    if hi <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if hi <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise Sam3Error(f"Label id {hi} does not fit in 32 bits.")


def default_axes(ndim: int) -> str:
    if not 2 <= ndim <= 5:
        raise Sam3Error(f"Labels must have 2 to 5 dimensions, got {ndim}.")
    return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}[ndim]


def write_labels_tiff(
    path: str | os.PathLike,
    labels: np.ndarray,
    *,
    scale: tuple[float, ...] | None = None,
    axes: str | None = None,
    unit: str = "micron",
    overwrite: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Write a label image as a compressed TIFF, atomically.

    Parameters
    ----------
    labels : (…, Y, X) integer array
        0 is background. Stored as uint16 when ids fit, else uint32.
    scale : one float per axis, optional
        Physical pixel size (napari layer ``scale``), e.g. ``(0.65, 0.65)`` or ``(2.0, 0.65, 0.65)``.
    axes : str, optional
        Axis letters from ``TZCYX`` (default: the last ``ndim`` of them).
    unit : str
        Unit of ``scale`` (``micron``, ``nm``, ``mm``...).
    metadata : dict, optional
        Extra JSON-serialisable values stored in the description (plain TIFF) or ImageJ ``Info``.
    """
    labels = np.asarray(labels)
    dtype = label_dtype(labels)
    data = labels.astype(dtype, copy=False)
    axes = (axes or default_axes(data.ndim)).upper()
    if len(axes) != data.ndim:
        raise Sam3Error(f"axes {axes!r} do not match labels with {data.ndim} dimensions.")
    if scale is not None:
        scale = tuple(float(s) for s in scale)
        if len(scale) != data.ndim:
            raise Sam3Error(f"scale {scale} needs one value per axis ({data.ndim}).")
        if any(not np.isfinite(s) or s <= 0 for s in scale):
            raise Sam3Error(f"scale values must be positive, got {scale}.")
    extra = dict(metadata or {})
    kwargs: dict = {"compression": COMPRESSION}
    imagej = dtype == np.uint16 and _imagej_order(axes)
    if imagej:
        md: dict = {"axes": axes}
        if scale is not None:
            sy, sx = scale[axes.index("Y")], scale[axes.index("X")]
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
            md["unit"] = unit
            if "Z" in axes:
                md["spacing"] = scale[axes.index("Z")]
        if extra:
            import json

            md["Info"] = json.dumps(extra)
        kwargs.update(imagej=True, metadata=md)
    else:
        md = {"axes": axes, **extra}
        if scale is not None:
            md["scale"] = list(scale)
            md["unit"] = unit
            to_cm = _UNIT_TO_CM.get(unit)
            if to_cm is not None:
                sy, sx = scale[axes.index("Y")], scale[axes.index("X")]
                kwargs["resolution"] = (1.0 / (sx * to_cm), 1.0 / (sy * to_cm))
                kwargs["resolutionunit"] = "CENTIMETER"
        kwargs.update(metadata=md)
    import tifffile

    with atomic_path(path, overwrite) as tmp:
        tifffile.imwrite(tmp, data, **kwargs)
    return Path(path)


def read_labels_tiff(path: str | os.PathLike) -> TiffLabels:
    """Read a label TIFF written by `write_labels_tiff` (or any single-series integer TIFF)."""
    import tifffile

    with open_tiff(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes.replace("Q", "Z").replace("I", "Z")
        scale, unit, extra = tiff_scale(tif, axes)
    if not np.issubdtype(data.dtype, np.integer):
        raise Sam3Error(f"{path} holds {data.dtype} data, not integer labels.")
    del tifffile
    return TiffLabels(data=data, axes=axes, scale=scale, unit=unit, metadata=extra)


def write_image_tiff(
    path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False, rgb: bool | None = None
) -> Path:
    """Write a raw image plane (any numeric dtype; RGB(A) kept as colour), compressed and atomic."""
    import tifffile

    image = np.asarray(image)
    is_rgb = rgb if rgb is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
    kwargs: dict = {"compression": COMPRESSION}
    if is_rgb:
        kwargs["photometric"] = "rgb"
        if image.shape[-1] == 4:
            kwargs["extrasamples"] = ["unassalpha"]
    else:
        kwargs["photometric"] = "minisblack"
    with atomic_path(path, overwrite) as tmp:
        tifffile.imwrite(tmp, image, **kwargs)
    return Path(path)


def _imagej_order(axes: str) -> bool:
    """ImageJ hyperstacks need axes in TZCYX order."""
    order = [("TZCYX".index(a) if a in "TZCYX" else -1) for a in axes]
    return -1 not in order and order == sorted(order) and axes.endswith("YX")


def tiff_scale(tif, axes: str) -> tuple[tuple[float, ...] | None, str | None, dict]:
    """Physical pixel size from our JSON description, ImageJ, OME or resolution tags."""
    import json

    extra: dict = {}
    scale = [1.0] * len(axes)
    found = False
    unit = None
    shaped = tif.shaped_metadata
    if shaped:
        md = dict(shaped[0])
        md.pop("shape", None)
        md.pop("axes", None)
        if md.get("scale") is not None and len(md["scale"]) == len(axes):
            scale, unit, found = [float(s) for s in md.pop("scale")], md.pop("unit", None), True
        extra = md
    ij = tif.imagej_metadata
    if ij:
        if ij.get("Info"):
            try:
                extra = json.loads(ij["Info"])
            except (TypeError, ValueError):
                extra = {"Info": ij["Info"]}
        if not found:
            page = tif.pages.first
            xres, yres = page.resolution
            if "X" in axes and xres and yres and (ij.get("unit") or page.resolutionunit != 1):
                scale[axes.index("X")] = 1.0 / xres
                scale[axes.index("Y")] = 1.0 / yres
                found = True
            if "Z" in axes and ij.get("spacing"):
                scale[axes.index("Z")] = float(ij["spacing"])
                found = True
            unit = ij.get("unit") or unit
    elif not found and tif.is_ome:
        try:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            pixels = root.find(".//{*}Pixels")
            for ax in "XYZ":
                v = pixels.get(f"PhysicalSize{ax}") if pixels is not None else None
                if v is not None and ax in axes:
                    scale[axes.index(ax)] = float(v)
                    found = True
            if pixels is not None:
                unit = pixels.get("PhysicalSizeXUnit", "µm" if found else None)
        except Exception:  # noqa: BLE001 - malformed OME XML: no scale, not an error
            pass
    if not found:
        page = tif.pages.first
        xres, yres = page.resolution
        unit_code = int(page.resolutionunit)
        if unit_code in (2, 3) and xres and yres and "X" in axes:  # inch / centimetre
            per_unit_um = 25400.0 if unit_code == 2 else 10000.0
            scale[axes.index("X")] = per_unit_um / xres
            scale[axes.index("Y")] = per_unit_um / yres
            unit, found = "micron", True
    return (tuple(scale) if found else None), unit, extra
