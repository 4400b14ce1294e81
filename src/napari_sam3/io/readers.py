"""Read microscopy files as 2-D planes: TIFF / OME-TIFF (tifffile), PNG / JPEG (imageio).

`iter_planes` yields one `Plane` per 2-D picture of a file: a plain image gives one, a z/t/c stack
gives one per index of its leading axes, named ``<stem>_z003`` (``_t001_z003`` for several axes).
RGB(A) stays one colour plane. Empty, corrupt, non-image and unsupported-shape files raise
`Sam3Error` with the reason, so a batch can report and skip them.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io._files import check_file, open_tiff, short_error
from napari_sam3.io.tiff import tiff_scale

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES
AXIS_TAG = {"Z": "z", "T": "t", "C": "c"}


@dataclass(frozen=True)
class Plane:
    """One 2-D (gray) or (H, W, 3|4) colour plane of a file."""

    data: np.ndarray
    source: Path
    stem: str  # output name: file stem plus the plane suffix (``cells_z003``)
    index: tuple[int, ...] = ()  # position along the leading axes; () for a plain image
    axes: str = "YX"  # axes of the file's leading dims + plane dims, e.g. "ZYX"
    rgb: bool = False
    scale: tuple[float, float] | None = None  # (sy, sx) physical pixel size when the file has it
    unit: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def slice_label(self) -> str:
        """``"z=3"`` style description of the plane (``""`` for a plain image)."""
        lead = self.axes[: len(self.index)]
        return ",".join(f"{a.lower()}={i}" for a, i in zip(lead, self.index, strict=True))


def image_suffix(path: str | os.PathLike) -> str:
    return Path(path).suffix.lower()


def is_supported(path: str | os.PathLike) -> bool:
    return image_suffix(path) in SUPPORTED_SUFFIXES


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their image files, not recursive) and globs -> sorted unique files.

    Returns ``(files, problems)``; ``problems`` lists ``(input, reason)`` for inputs that match nothing.
    Files named explicitly are kept whatever their suffix (reading them reports the problem).
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        item = os.fspath(item)
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file() and is_supported(q) and not q.name.startswith(".")
            )
            if not found:
                problems.append((item, "folder holds no .tif/.tiff/.png/.jpg/.jpeg files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item) if Path(q).is_file())
            if not found:
                problems.append((item, "pattern matches no file"))
            files.extend(found)
        else:
            problems.append((item, "no such file or folder"))
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return unique, problems


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str, dict]:
    """Read a whole file: ``(data, axes, info)`` with axes like ``"YX"``, ``"ZYX"``, ``"YXS"``.

    ``info`` holds ``scale`` ((sy, sx) or None) and ``unit``.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix in TIFF_SUFFIXES:
        with open_tiff(path) as tif:
            series = tif.series[0]
            try:
                data = series.asarray()
            except Exception as exc:  # noqa: BLE001
                raise Sam3Error(
                    f"{path.name}: the TIFF data cannot be decoded ({short_error(exc)})."
                ) from exc
            axes = series.axes
            scale, unit, _ = tiff_scale(tif, axes)
        info = {"unit": unit, "scale": None}
        if scale is not None and "Y" in axes and "X" in axes:
            info["scale"] = (scale[axes.index("Y")], scale[axes.index("X")])
        return data, axes, info
    if suffix in PIL_SUFFIXES:
        check_file(path)
        import imageio.v3 as iio

        try:
            data = np.asarray(iio.imread(path))
        except Exception as exc:  # noqa: BLE001
            raise Sam3Error(
                f"{path.name}: not a readable {suffix[1:].upper()} image ({short_error(exc)})."
            ) from exc
        if data.ndim == 2:
            axes = "YX"
        elif data.ndim == 3 and data.shape[-1] in (3, 4):
            axes = "YXS"
        elif data.ndim == 3 and data.shape[-1] in (1, 2):  # gray (+alpha)
            data, axes = data[..., 0], "YX"
        else:
            raise Sam3Error(f"{path.name}: unsupported image shape {data.shape}.")
        return data, axes, {"scale": None, "unit": None}
    check_file(path)
    raise Sam3Error(
        f"{path.name}: unsupported file type {suffix or '(no suffix)'}; "
        f"use {', '.join(SUPPORTED_SUFFIXES)}."
    )


def file_base(path: str | os.PathLike) -> str:
    """Output base name of a file: its stem without ``.ome`` (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def iter_planes(path: str | os.PathLike, base: str | None = None) -> Iterator[Plane]:
    """Yield every 2-D plane of a file (see module docstring). Raises `Sam3Error` for bad files.

    ``base`` replaces the file stem in the plane names (to keep names unique across folders).
    """
    path = Path(path)
    data, axes, info = read_image(path)
    data, axes = normalise_axes(path, data, axes)
    rgb = axes.endswith("S")
    lead = axes[: -3 if rgb else -2]
    base = base or file_base(path)
    if not lead:
        yield Plane(data, path, base, (), axes, rgb, info["scale"], info["unit"])
        return
    for index, suffix in plane_suffixes(lead, data.shape[: len(lead)]):
        yield Plane(
            np.asarray(data[index]),
            path,
            base + suffix,
            tuple(int(i) for i in index),
            axes,
            rgb,
            info["scale"],
            info["unit"],
        )


def plane_suffixes(lead: str, shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
    """(index, name suffix) of every plane along the leading axes ``lead`` of ``shape``."""
    tags = [AXIS_TAG.get(a, "z") for a in lead]
    if len(set(tags)) != len(tags):
        tags = [f"{t}{k}" for k, t in enumerate(tags)]
    widths = [max(3, len(str(n - 1))) for n in shape]
    return [
        (index, "".join(f"_{t}{i:0{w}d}" for t, i, w in zip(tags, index, widths, strict=True)))
        for index in itertools.product(*(range(n) for n in shape))
    ]


def plane_stems(path: str | os.PathLike, base: str | None = None) -> list[str]:
    """The plane names `iter_planes` gives a file, from its header only (TIFF) or ``[base]``.

    A file whose header cannot be read gives ``[base]`` (its job reports why later).
    """
    path = Path(path)
    base = base or file_base(path)
    if image_suffix(path) not in TIFF_SUFFIXES:
        return [base]
    try:
        with open_tiff(path) as tif:
            shape, axes = tuple(tif.series[0].shape), tif.series[0].axes
    except Exception:  # noqa: BLE001 - unreadable: the job says why
        return [base]
    if len(axes) != len(shape):
        axes = "Q" * (len(shape) - 2) + "YX"
    shape, axes = _squeeze(shape, axes)
    if axes.endswith("S") and shape[-1] not in (3, 4):
        shape, axes = (shape[-1], *shape[:-1]), "C" + axes[:-1]
    lead = axes[: -3 if axes.endswith("S") else -2]
    if not lead:
        return [base]
    return [base + suffix for _, suffix in plane_suffixes(lead, shape[: len(lead)])]


def count_planes(path: str | os.PathLike) -> int:
    """How many planes `iter_planes` yields (reads only the header of a TIFF)."""
    path = Path(path)
    if image_suffix(path) in TIFF_SUFFIXES:
        with open_tiff(path) as tif:
            s = tif.series[0]
            shape, axes = s.shape, s.axes
        shape, axes = _squeeze(shape, axes)
        n_plane = 3 if axes.endswith("S") else 2
        return int(np.prod(shape[:-n_plane])) if len(shape) > n_plane else 1
    return 1


def _squeeze(shape, axes):
    keep = [i for i, (n, a) in enumerate(zip(shape, axes, strict=True)) if n > 1 or a in "YX"]
    return tuple(shape[i] for i in keep), "".join(axes[i] for i in keep)


def normalise_axes(path: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop length-1 axes, check a YX(S) plane is at the end."""
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise Sam3Error(f"{path.name}: unsupported data type {data.dtype}.")
    if len(axes) != data.ndim:
        axes = "Q" * (data.ndim - 2) + "YX"
    shape, axes = _squeeze(data.shape, axes)
    data = data.reshape(shape)
    if axes.endswith("S") and data.shape[-1] not in (3, 4):
        # samples that are not RGB(A): treat them as channels
        data = np.moveaxis(data, -1, 0)
        axes = "C" + axes[:-1]
    if not (axes.endswith("YX") or axes.endswith("YXS")) or data.ndim < 2:
        raise Sam3Error(
            f"{path.name}: unsupported dimensions {data.shape} (axes {axes}); "
            "a 2-D image, RGB, or a stack of 2-D planes is needed."
        )
    return data, axes
