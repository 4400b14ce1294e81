"""The nucleus network's photometric augmentations (core/learned/augment.py): the wide recipe
shows the network what other labs' images did to it (issue 18), and never turns nuclei into
background."""

import numpy as np
from scipy import ndimage as ndi

from napari_sam3.core.learned.augment import photometric
from napari_sam3.core.learned.scaling import normalise
from napari_sam3.core.synthetic import synthetic_nuclei


def _crop():
    img, lab = synthetic_nuclei((128, 128), seed=3, diameter=16, coverage=0.4, photons=2000)
    x = normalise(img)
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float32), lab


def test_same_seed_same_result_any_seed_finite():
    x, _ = _crop()
    a = photometric(x, np.random.default_rng(5))
    assert np.array_equal(a, photometric(x, np.random.default_rng(5)))
    for seed in range(50):
        for wide in (True, False):
            y = photometric(x, np.random.default_rng(seed), wide=wide)
            assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.array_equal(x, _crop()[0])  # the input is not modified


def test_wide_recipe_covers_dim_and_quantised_and_keeps_nuclei_brighter():
    x, lab = _crop()
    ids = np.arange(1, lab.max() + 1)
    fg = lab > 0
    brighter = dim = few_levels = 0
    n = 300
    for seed in range(n):
        y = photometric(x, np.random.default_rng(seed))
        brighter += np.median(y[fg]) > np.median(y[~fg])
        means = ndi.mean(y, lab, ids) - np.median(y[~fg])
        dim += np.quantile(means, 0.1) < 0.25 * np.quantile(means, 0.9)  # some nuclei faint
        few_levels += len(np.unique(y)) <= 64  # an 8-bit-like camera / export
    assert brighter >= 0.95 * n  # the labels stay true
    assert dim >= 0.1 * n and few_levels >= 0.05 * n, (dim, few_levels)
    narrow_levels = sum(
        len(np.unique(photometric(x, np.random.default_rng(s), wide=False))) <= 64
        for s in range(50)
    )
    assert narrow_levels == 0  # the old recipe never showed a coarse camera
