"""The Count tab's "Train on these labels", without Qt: pair Labels layers with their images,
fine-tune the nucleus network in a job (`core.learned.finetune`), report F1 before -> after.

A Labels layer pairs with the image it was made from: the ``sam3`` metadata of a SAM3 result, the
name of a count ("<image> count (learned)"), or else the one image layer of the same shape
(hand-painted labels). Objects a review rejected are left out. Every plane of a layer with at least one object trains; planes without
objects are left out. The job is submitted with the same ``submit`` callable as counts (progress
with loss and time left, Cancel between steps).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from napari.utils.events import EmitterGroup

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.review import drop_rejected

__all__ = ["TrainSession", "default_network_dir", "labelled_pairs"]


def default_network_dir() -> Path:
    """Where new networks go unless the user picks a place: the user's data folder."""
    if sys.platform == "win32":
        root = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME", "") or Path.home() / ".local" / "share")
    return root / "napari-sam3" / "networks"


def _image_of(viewer, labels):
    import napari

    images = [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]
    meta = labels.metadata.get("sam3") if isinstance(labels.metadata, dict) else None
    named = meta.get("image") if isinstance(meta, dict) else None
    if named is None and " count (" in labels.name:
        named = labels.name.split(" count (", 1)[0]
    for img in images:
        if img.name == named:
            return img
    shape = tuple(labels.data.shape)
    same = [im for im in images if tuple(im.data.shape[: len(shape)]) == shape]
    return same[0] if len(same) == 1 else None


def labelled_pairs(viewer, layers) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image plane, labels plane) for every plane with objects of the given Labels layers."""
    pairs = []
    for lab in layers:
        img = _image_of(viewer, lab)
        if img is None:
            raise Sam3Error(
                f"'{lab.name}': no image layer of the same shape to train on; keep the image it "
                f"was made from open (a count result names it)."
            )
        data = np.asarray(lab.data)
        features = getattr(lab, "features", None)
        if features is not None and len(features) and "label" in features:
            data = drop_rejected(data, features)[0]  # a reviewed result: rejected objects out
        image = np.asarray(img.data)
        plane_shape = image.shape[:-1] if img.rgb else image.shape
        if data.shape != plane_shape:
            raise Sam3Error(
                f"'{lab.name}' has shape {data.shape} but '{img.name}' {plane_shape}; label the "
                f"whole image (or count it with All slices) before training."
            )
        lead = data.shape[:-2]
        for idx in np.ndindex(*lead) if lead else [()]:
            plane = data[idx]
            if plane.any():
                where = f"[{','.join(map(str, idx))}]" if idx else ""
                pairs.append((f"{img.name}{where}", image[idx], plane.astype(np.int32)))
    if not pairs:
        raise Sam3Error("The chosen labels have no objects; paint or count some first.")
    return pairs


class TrainSession:
    """Fine-tunes on a viewer's Labels layers; ``events.trained`` (``value``: `FinetuneResult`,
    ``lines``) and ``events.status``."""

    def __init__(self, viewer, submit) -> None:
        self.viewer = viewer
        self._submit = submit
        self.events = EmitterGroup(source=self, trained=None, status=None)
        self.last = None

    def run(self, layers, out: str | Path, steps: int | None = None, base=None):
        """Check everything now (bad input raises `Sam3Error` before any job); the submitted job."""
        from napari_sam3.core.defaults import FINETUNE_STEPS
        from napari_sam3.io.network_file import check_network_out

        check_network_out(out, overwrite=True)  # the save dialog asked before replacing a file
        pairs = labelled_pairs(self.viewer, layers)
        steps = int(steps or FINETUNE_STEPS)

        def make():
            from napari_sam3.core.learned.finetune import iter_finetune
            from napari_sam3.io.network_file import save_network

            result = yield from iter_finetune(pairs, base=base, steps=steps)
            result.path = save_network(result.net, out, result.meta, overwrite=True)
            return result

        def done(result) -> None:
            self.last = result
            lines = [result.summary, f"Saved {result.path}"]
            self.events.trained(value=result, lines=lines)

        from napari_sam3.core.learned.finetune import time_text

        n = sum(len(np.unique(p[2])) - 1 for p in pairs)
        return self._submit(
            make,
            "Train on labels",
            "train",
            done,
            status=f"Training on {len(pairs)} plane(s), {n} objects: {steps} steps, "
            f"{time_text(steps)}...",
        )
