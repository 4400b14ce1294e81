"""What differs between microscopes, applied to training crops of the nucleus network.

One home for the photometric augmentations: training the shipped network
(training/train_nucleus_net.py) and fine-tuning on a user's labels use the same ones. Input and
output are normalised planes (`scaling.normalise`: background ~0, bright nuclei ~1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["photometric"]


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 copy of ``img`` with random contrast, offset, gamma, noise and blur."""
    img = np.asarray(img, np.float32)
    if rng.random() < 0.3:
        img = ndi.gaussian_filter(img, rng.uniform(0.5, 1.5))
    pos = np.clip(img, 0, None)
    img = img - pos + pos ** rng.uniform(0.7, 1.4)
    img = img * rng.uniform(0.6, 1.4) + rng.uniform(-0.1, 0.1)
    img = img + rng.normal(0, rng.uniform(0, 0.08), img.shape)
    return img.astype(np.float32)
