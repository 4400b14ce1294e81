"""The stacks of an input file for ``napari-sam3 track``: which axis to follow, one stack per index
of the other stack axes, and the calibration the label output keeps."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.readers import AXIS_TAG, TIFF_SUFFIXES, image_suffix, normalise_axes, read_image


@dataclass(frozen=True)
class StackInput:
    """One stack to track: ``(T, H, W)`` or ``(T, H, W, 3|4)`` frames of a file."""

    data: np.ndarray
    source: Path
    stem: str  # output base: file stem plus the other axes' suffix (``cells_c001``)
    slice_label: str  # ``"c=1"`` for the other axes of a 4-D+ file; ``""`` otherwise
    axes: str  # axes of the label output: ``"TYX"`` or ``"ZYX"``
    rgb: bool
    scale: tuple[float, float, float] | None  # (frame spacing, sy, sx) when the file has a scale
    unit: str | None


def read_stacks(path: str | os.PathLike, base: str, axis: int | str | None = None) -> list:
    """The stacks of a file to track (see module docstring); `Sam3Error` names the fix otherwise."""
    path = Path(path)
    data, axes, info = read_image(path)
    data, axes = normalise_axes(path, data, axes)
    rgb = axes.endswith("S")
    lead = axes[: -3 if rgb else -2]
    if not lead:
        raise Sam3Error(
            f"{path.name} is a single plane: use `napari-sam3 segment` for it "
            f"(tracking needs a z or t stack; got shape {tuple(data.shape)})."
        )
    where = f"{path.name} (shape {tuple(data.shape)}, axes {axes})"
    choices = " or ".join(f"--axis {i} ({a})" for i, a in enumerate(lead))
    if axis is None:
        if len(lead) > 1:
            raise Sam3Error(
                f"{where} has {len(lead)} stack axes: say which one to track along with {choices}."
            )
        k = 0
    elif isinstance(axis, int):
        if axis >= len(lead):
            raise Sam3Error(f"--axis {axis} is not a stack axis of {where}: use {choices}.")
        k = axis
    else:
        if lead.count(axis) != 1:
            raise Sam3Error(f"--axis {axis} is not a stack axis of {where}: use {choices}.")
        k = lead.index(axis)
    letter = lead[k]
    out_axes = "TYX" if letter == "T" else "ZYX"
    scale = None
    if info.get("scale") is not None:
        sy, sx = info["scale"]
        spacing = _z_spacing(path) if out_axes == "ZYX" else None
        scale = (float(spacing or 1.0), float(sy), float(sx))
    others = [i for i in range(len(lead)) if i != k]
    tags = [AXIS_TAG.get(a, "z") for a in lead]
    if len(set(tags)) != len(tags):
        tags = [f"{t}{i}" for i, t in enumerate(tags)]
    stacks = []
    for index in itertools.product(*(range(data.shape[i]) for i in others)):
        sel: list = [slice(None)] * data.ndim
        suffix, label = "", []
        for i, v in zip(others, index, strict=True):
            sel[i] = v
            width = max(3, len(str(data.shape[i] - 1)))
            suffix += f"_{tags[i]}{v:0{width}d}"
            label.append(f"{lead[i].lower()}={v}")
        stacks.append(
            StackInput(
                data=np.asarray(data[tuple(sel)]),
                source=path,
                stem=base + suffix,
                slice_label=",".join(label),
                axes=out_axes,
                rgb=rgb,
                scale=scale,
                unit=info.get("unit"),
            )
        )
    return stacks


def _z_spacing(path: Path) -> float | None:
    """The z spacing a TIFF records (ImageJ ``spacing``, OME, our JSON), None when it has none."""
    if image_suffix(path) not in TIFF_SUFFIXES:
        return None
    from napari_sam3.io._files import open_tiff
    from napari_sam3.io.tiff import tiff_scale

    try:
        with open_tiff(path) as tif:
            axes = tif.series[0].axes
            scale, _, _ = tiff_scale(tif, axes)
    except Exception:  # noqa: BLE001 - calibration is optional
        return None
    if scale is None or "Z" not in axes:
        return None
    return float(scale[axes.index("Z")])
