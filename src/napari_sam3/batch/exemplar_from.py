"""``--exemplar-from IMAGE:X0,Y0,X1,Y1``: exemplar boxes drawn on one image, used on every image.

``--exemplar X0,Y0,X1,Y1`` puts the same coordinates on every image, which only means something
for the image they were drawn on. Here the boxes are encoded once on IMAGE (SAM3's own exemplar
tokens, `Sam3Engine.exemplar_prompt`) and every input image is conditioned on them
(`Sam3Engine.segment_with`).

    sources = parse_exemplar_from(["ref.tif:120,40,160,82;200,10,240,50"])
    prompt = exemplar_prompt_from(engine, sources, text=None)          # once per process
    cands = engine.segment_with(plane, prompt, min_score=..., mask_threshold=...)

Several ``--exemplar-from`` options (several reference images) merge into one prompt. The first
plane of IMAGE is used (a stack: its first slice; give a 2-D image to be sure).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from napari_sam3.batch.settings import parse_box
from napari_sam3.core.errors import Sam3Error


@dataclass(frozen=True)
class ExemplarSource:
    """Positive exemplar boxes (pixel x0, y0, x1, y1) on one reference image."""

    path: str
    boxes: tuple[tuple[float, float, float, float], ...]

    def fingerprint(self) -> str:
        """The image's content and the boxes: what makes a resumed run the same run."""
        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise Sam3Error(f"--exemplar-from: cannot read {self.path}: {exc.strerror}") from None
        digest.update(repr(self.boxes).encode())
        return digest.hexdigest()[:16]


def parse_exemplar_from(specs: str | list[str] | tuple[str, ...]) -> tuple[ExemplarSource, ...]:
    """``"IMAGE:X0,Y0,X1,Y1[;X0,Y0,X1,Y1...]"`` options -> sources; `Sam3Error` naming the form.

    The boxes follow the last ``:`` (so Windows paths such as ``C:\\data\\a.tif:1,2,3,4`` work).
    """
    items = [specs] if isinstance(specs, str) else list(specs or ())
    out = []
    for spec in items:
        path, sep, boxes_text = str(spec).rpartition(":")
        if not sep or not path or not boxes_text.strip():
            raise Sam3Error(
                f"--exemplar-from {spec!r}: use IMAGE:X0,Y0,X1,Y1 (several boxes separated by ';')."
            )
        try:
            boxes = tuple(parse_box(b) for b in boxes_text.split(";") if b.strip())
        except ValueError as exc:
            raise Sam3Error(f"--exemplar-from: {exc}") from None
        if not Path(path).is_file():
            raise Sam3Error(f"--exemplar-from: the reference image {path} does not exist.")
        out.append(ExemplarSource(path, boxes))
    return tuple(out)


def exemplar_prompt_from(engine, sources, text=None, preprocessing=None):
    """One `ExemplarPrompt` from all sources (cached per engine and sources in this process)."""
    from napari_sam3.core.images import Preprocessing
    from napari_sam3.core.sam3.exemplar_prompt import merge_prompts
    from napari_sam3.io.readers import iter_planes

    sources = tuple(sources)
    if not sources:
        raise Sam3Error("--exemplar-from: no reference image given.")
    pre = preprocessing or Preprocessing()
    key = (engine.model_key, sources, repr(text), repr(pre))
    with _lock:
        cached = _prompts.get(key)
    if cached is not None:
        return cached
    prompts = []
    for source in sources:
        plane = next(iter(iter_planes(source.path)), None)
        if plane is None:
            raise Sam3Error(f"--exemplar-from: {source.path} holds no image plane.")
        prompts.append(
            engine.exemplar_prompt(
                plane.data, list(source.boxes), text=text, preprocessing=pre, rgb=plane.rgb
            )
        )
    prompt = merge_prompts(prompts)
    with _lock:
        _prompts[key] = prompt
    return prompt


_lock = threading.Lock()
_prompts: dict = {}


__all__ = ["ExemplarSource", "exemplar_prompt_from", "parse_exemplar_from"]
