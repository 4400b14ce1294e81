"""COCO instance segmentation JSON with RLE masks (pycocotools), one category per concept.

Every annotation carries ``score`` (null where a method has none) so the file doubles as a detection
result. A run over many images is assembled from per-image parts with `merge_coco`, which renumbers
images, categories (matched by name) and annotations, so a resumed run never duplicates anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.io.atomic import write_json


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed RLE of a 2-D boolean mask, ``counts`` as text (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_mask(segmentation: dict, height: int, width: int) -> np.ndarray:
    """Boolean mask of an RLE (compressed or not) or polygon segmentation."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def coco_from_masks(
    masks: np.ndarray,
    scores: Sequence[float],
    prompts: Sequence[str],
    *,
    file_name: str,
    image_id: int = 1,
    image_extra: dict | None = None,
    labels: Sequence[int] | None = None,
) -> dict:
    """A one-image COCO dict; categories numbered 1.. in first-seen prompt order.

    ``labels`` (optional) stores each object's id in the label image as ``label`` on its annotation.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    n, height, width = masks.shape if masks.ndim == 3 else (0, 0, 0)
    names = list(dict.fromkeys(str(p) for p in prompts))
    cat_id = {name: i + 1 for i, name in enumerate(names)}
    anns = []
    for i in range(n):
        rle = encode_mask(masks[i])
        raw = dict(rle, counts=rle["counts"].encode("ascii"))
        area = int(mask_utils.area(raw))
        if area == 0:
            continue  # COCO has no empty instances
        score = float(scores[i])
        ann = {
            "id": len(anns) + 1,
            "image_id": image_id,
            "category_id": cat_id[str(prompts[i])],
            "segmentation": rle,
            "area": area,
            "bbox": [float(v) for v in mask_utils.toBbox(raw)],
            "iscrowd": 0,
            "score": score if np.isfinite(score) else None,
        }
        if labels is not None:
            ann["label"] = int(labels[i])
        anns.append(ann)
    image = {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
    image.update(image_extra or {})
    return {
        "info": _info(dated=False),  # parts are deterministic: a redone part has the same bytes
        "images": [image],
        "annotations": anns,
        "categories": [{"id": cat_id[n_], "name": n_, "supercategory": "object"} for n_ in names],
    }


def coco_from_candidates(
    candidates: Candidates, *, file_name: str, image_id: int = 1, image_extra: dict | None = None
) -> dict:
    """COCO for one plane's candidates (full masks, so overlaps survive; ``label`` = index + 1)."""
    return coco_from_masks(
        candidates.masks,
        candidates.scores,
        candidates.prompts,
        file_name=file_name,
        image_id=image_id,
        image_extra=image_extra,
        labels=np.arange(1, len(candidates) + 1),
    )


def coco_from_labels(
    labels: np.ndarray,
    table=None,
    *,
    file_name: str,
    image_id: int = 1,
    image_extra: dict | None = None,
) -> dict:
    """COCO for a 2-D label image; ``table`` (objects CSV / napari features) gives prompt + score."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise Sam3Error(f"COCO export needs a 2-D label image, got shape {labels.shape}.")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    prompt_of: dict[int, str] = {}
    score_of: dict[int, float] = {}
    if table is not None and len(table) and "label" in table:
        for row in table.to_dict("records"):
            lab = int(row["label"])
            prompt_of[lab] = str(row.get("prompt") or "object")
            s = row.get("score")
            score_of[lab] = float(s) if s is not None and s == s else float("nan")
    masks = labels[None] == ids[:, None, None] if ids.size else np.zeros((0, *labels.shape), bool)
    return coco_from_masks(
        masks,
        [score_of.get(int(i), float("nan")) for i in ids],
        [prompt_of.get(int(i), "object") for i in ids],
        file_name=file_name,
        image_id=image_id,
        image_extra=image_extra,
        labels=ids,
    )


def merge_coco(parts: Iterable[dict]) -> dict:
    """Join one-image (or several-image) COCO dicts into one; ids renumbered, categories by name."""
    images, anns, cats = [], [], {}
    for part in parts:
        cat_name = {c["id"]: c["name"] for c in part.get("categories", [])}
        img_map = {}
        for img in part.get("images", []):
            new = dict(img, id=len(images) + 1)
            img_map[img["id"]] = new["id"]
            images.append(new)
        for ann in part.get("annotations", []):
            name = cat_name[ann["category_id"]]
            if name not in cats:
                cats[name] = len(cats) + 1
            anns.append(
                dict(
                    ann, id=len(anns) + 1, image_id=img_map[ann["image_id"]], category_id=cats[name]
                )
            )
        for name in cat_name.values():
            cats.setdefault(name, len(cats) + 1)
    return {
        "info": _info(),
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in cats.items()],
    }


def write_coco(path: str | os.PathLike, coco: dict, *, overwrite: bool = False) -> Path:
    """Write a COCO dict atomically."""
    return write_json(path, coco, overwrite=overwrite)


def load_coco(path: str | os.PathLike):
    """Load with pycocotools (``COCO`` object); `Sam3Error` if it is not valid COCO JSON."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(os.fspath(path))
    except Exception as exc:  # noqa: BLE001
        raise Sam3Error(f"{path}: not a readable COCO file ({exc}).") from exc


def candidates_from_coco(coco: dict | str | os.PathLike, image_id: int = 1) -> Candidates:
    """The annotations of one image as `Candidates` (in annotation order; prompt = category name)."""
    if not isinstance(coco, dict):
        coco = json.loads(Path(coco).read_text(encoding="utf-8"))
    img = next((i for i in coco["images"] if i["id"] == image_id), None)
    if img is None:
        raise Sam3Error(f"image id {image_id} is not in the COCO file.")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    h, w = int(img["height"]), int(img["width"])
    if not anns:
        return Candidates.empty((h, w))
    masks = np.stack([decode_mask(a["segmentation"], h, w) for a in anns])
    scores = [np.nan if a.get("score") is None else a["score"] for a in anns]
    return Candidates.from_masks(
        masks, np.asarray(scores, np.float32), [names[a["category_id"]] for a in anns]
    )


def _info(dated: bool = True) -> dict:
    from napari_sam3 import __version__

    info = {"description": "napari-sam3 export", "version": __version__}
    if dated:
        info["date_created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return info
