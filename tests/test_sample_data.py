"""The offline nuclei sample and the synthetic generator behind it."""

import subprocess
import sys

import numpy as np

from napari_sam3._sample_data import make_nuclei_sample, make_nuclei_sample_with_labels
from napari_sam3.core.results.measure import measure_labels
from napari_sam3.core.synthetic import synthetic_nuclei


def test_sample_is_layer_data_and_deterministic():
    data = make_nuclei_sample()
    assert len(data) == 1
    image, meta, kind = data[0]
    assert kind == "image"
    assert image.shape == (512, 512) and image.dtype == np.uint16
    assert meta["name"] and len(meta["scale"]) == 2 and all(s > 0 for s in meta["scale"])
    assert np.array_equal(image, make_nuclei_sample()[0][0])
    (img2, _, _), (labels, lmeta, lkind) = make_nuclei_sample_with_labels()
    assert np.array_equal(img2, image) and lkind == "labels" and labels.shape == image.shape
    assert lmeta["scale"] == meta["scale"]


def test_sample_looks_like_dense_unevenly_lit_nuclei():
    (image, _, _), (labels, _, _) = make_nuclei_sample_with_labels()
    n = labels.max()
    assert 400 <= n <= 900
    assert len(np.unique(labels)) - 1 == n  # sequential ids
    assert 0.35 <= (labels > 0).mean() <= 0.65  # dense
    # touching: many objects share a border with another object
    right = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    assert right.sum() > 200
    # varied sizes and brightness, uneven background
    t = measure_labels(labels, image)
    assert t["equivalent_diameter"].std() / t["equivalent_diameter"].mean() > 0.12
    assert t["mean_intensity"].quantile(0.9) > 1.8 * t["mean_intensity"].quantile(0.1)
    bg = np.where(labels == 0, image, np.nan).astype(float)
    quads = [
        np.nanmedian(bg[:256, :256]),
        np.nanmedian(bg[:256, 256:]),
        np.nanmedian(bg[256:, :256]),
        np.nanmedian(bg[256:, 256:]),
    ]
    assert max(quads) - min(quads) > 3  # ADU; noise sigma alone would not shift medians this much


def test_synthetic_options():
    a, la = synthetic_nuclei((64, 80), seed=3, diameter=10)
    b, lb = synthetic_nuclei((64, 80), seed=3, diameter=10)
    c, _ = synthetic_nuclei((64, 80), seed=4, diameter=10)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == la.shape == (64, 80) and la.dtype == np.int32
    hot, _ = synthetic_nuclei((64, 80), seed=3, diameter=10, hot_pixels=5)
    assert (hot == 65535).sum() >= 4
    f, _ = synthetic_nuclei((32, 32), seed=1, dtype=np.float32)
    assert f.dtype == np.float32
    few, lf = synthetic_nuclei((128, 128), n=5, seed=1)
    assert lf.max() == 5


def test_sample_module_does_not_import_napari_or_qt():
    code = (
        "import sys, napari_sam3._sample_data as s; s.make_nuclei_sample(); "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sample_loads_as_a_napari_layer():
    from napari.layers import Layer

    layer = Layer.create(*make_nuclei_sample()[0])
    assert layer.data.shape == (512, 512)
    assert tuple(layer.scale) == make_nuclei_sample()[0][1]["scale"]
