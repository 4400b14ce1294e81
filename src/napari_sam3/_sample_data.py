"""Sample data that ships offline: a synthetic, dense, unevenly lit fluorescent-nuclei image.

The image is generated on the fly (deterministic, < 0.2 s) by `core.synthetic.synthetic_nuclei`, so
nothing is downloaded and the benchmark can use the same generator with its ground truth.
"""

from __future__ import annotations

PIXEL_SIZE_UM = 0.65  # a 10x widefield objective on a 6.5 um camera pixel


def make_nuclei_sample():
    """napari sample: [(image, {"name", "scale", ...}, "image")], 512x512 uint16 nuclei."""
    from napari_sam3.core.synthetic import synthetic_nuclei

    image, _ = synthetic_nuclei((512, 512), seed=0, diameter=18.0, coverage=0.5, touching=0.75)
    meta = {
        "name": "nuclei (synthetic)",
        "scale": (PIXEL_SIZE_UM, PIXEL_SIZE_UM),
        "colormap": "gray",
        "contrast_limits": (float(image.min()), float(image.max())),
        "metadata": {
            "description": "Synthetic fluorescent nuclei: dense, touching, uneven illumination, "
            "Poisson + read noise (napari_sam3.core.synthetic.synthetic_nuclei, seed 0).",
            "pixel_size_um": PIXEL_SIZE_UM,
        },
    }
    return [(image, meta, "image")]


def make_nuclei_sample_with_labels():
    """The same image plus its ground-truth labels (for tutorials and tests)."""
    from napari_sam3.core.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((512, 512), seed=0, diameter=18.0, coverage=0.5, touching=0.75)
    scale = (PIXEL_SIZE_UM, PIXEL_SIZE_UM)
    return [
        (image, {"name": "nuclei (synthetic)", "scale": scale}, "image"),
        (labels, {"name": "nuclei ground truth", "scale": scale}, "labels"),
    ]
