"""``segment`` / ``count``: the per-plane part of the run loop (`batch.loop`), as a `Command`.

Each input file gives one item per 2-D plane (`io.readers.iter_planes`); producing an item runs the
model or the classical counter and writes ``<stem>_labels.tif``, ``<stem>_objects.csv`` and the
requested formats (`io.export.export_plane`). Runs in the CLI process or in a Dask worker process
(the model is loaded once per process and kept: `Sam3Engine.load` caches it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from napari_sam3.batch.assemble import assemble_planes
from napari_sam3.batch.loop import Command, Item, ModelLoadError, run_command
from napari_sam3.batch.runner import BatchReport, FileJob
from napari_sam3.batch.settings import BatchSettings
from napari_sam3.core.defaults import WITHOUT_SAM3
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.refine import check_level, filter_candidates, refine_label_image
from napari_sam3.io.export import export_plane, output_paths
from napari_sam3.io.manifest import provenance
from napari_sam3.io.readers import iter_planes, plane_stems
from napari_sam3.io.tables import count_table, table_with_labels

__all__ = ["ModelLoadError", "PlaneCommand", "run_batch"]

RUN_MANIFEST = "manifest.json"
RUN_TOOL = "napari-sam3 batch"


class PlaneCommand(Command):
    """``segment`` or ``count`` with these settings, one item per plane."""

    tool = RUN_TOOL
    manifest = RUN_MANIFEST
    what = "plane(s)"

    def __init__(self, settings: BatchSettings):
        super().__init__(settings)
        # what the run finds, checked once (core.requests); the settings add the io
        count = settings.command == "count"
        self.request = settings.count_request() if count else settings.segment_request()

    def run_files(self) -> list[str]:
        names = [RUN_MANIFEST, "counts.csv"]
        if "coco" in self.settings.formats:
            names.append("coco.json")
        if "pairs" in self.settings.formats:
            names.append("pairs/manifest.json")
        return names

    def stems(self, job: FileJob) -> list[str]:
        return plane_stems(job.path, job.base)

    def items(self, job: FileJob, out: Path) -> Iterator[Item]:
        planes = list(iter_planes(job.path, base=job.base))  # views of the one array read
        # count: the file's planes are one stack (core.counting.run: ONE diameter, estimated
        # when the first plane that needs it is counted; huge planes tiled)
        run = None
        if self.settings.command == "count":
            from napari_sam3.core.counting.run import CountRun

            first = planes[0] if planes else None
            run = CountRun(
                self.request,
                _PlaneData(planes),
                rgb=getattr(first, "rgb", None),
                scale=getattr(first, "scale", None),  # physical columns of huge planes' tables
            )
        for i, plane in enumerate(planes):
            paths = output_paths(out, plane.stem, self.settings.formats)
            data = (plane, run, i)
            yield Item(
                plane.stem, Path(plane.source), plane.slice_label, plane.stem, paths, data, job.base
            )

    def prepare(self) -> None:
        if self.settings.method == "sam3":
            get_engine(self.settings)

    def produce(self, item: Item, out: Path, on_progress) -> tuple[dict, dict]:
        settings, (plane, run, index) = self.settings, item.data
        info: dict = {}
        if settings.command == "count":
            labels, table, cands = _count(plane, settings, run, index, on_progress, info)
        else:
            labels, table, cands = _segment(plane, settings, self.request, on_progress)
        # our own partial files (started record) are replaced; others were refused before
        export_plane(
            out,
            plane.stem,
            labels=labels,
            candidates=cands,
            table=table,
            image=plane.data,
            rgb=plane.rgb,
            formats=settings.formats,
            scale=plane.scale,
            unit=plane.unit or "micron",
            file_name=Path(plane.source).name,
            overwrite=True,
            metadata={"source": Path(plane.source).name, "slice": plane.slice_label},
        )
        count = len(cands) if cands is not None else int(len(table))
        ex_boxes, ex_labels = settings.exemplar_boxes()
        prov = provenance(
            source=str(plane.source),
            slice_label=plane.slice_label or None,
            model=settings.model_label(),
            method=settings.method,
            prompts=list(settings.prompts) or None,
            exemplars=ex_boxes or None,
            exemplar_labels=ex_labels if settings.negative_exemplars else None,
            threshold=settings.threshold if settings.method == "sam3" else None,
            mask_threshold=settings.mask_threshold if settings.method == "sam3" else None,
            diameter=info.get("diameter", settings.diameter),
            diameter_source=info.get("diameter_source"),
            polarity=settings.polarity if settings.method in WITHOUT_SAM3 else None,
            warnings=info.get("warnings") or None,
            refine=settings.refine if settings.command == "segment" else None,
        )
        values = {"count": count}
        if settings.method in WITHOUT_SAM3:
            keys = ("diameter", "diameter_source", "warnings")
            values.update({k: info[k] for k in keys if info.get(k) is not None})
            values["polarity"] = settings.polarity
        return values, prov

    def assemble(self, out: Path, report: BatchReport, argv: list[str] | None) -> None:
        settings = self.settings
        assemble_planes(
            out,
            self,
            report,
            argv,
            {
                **settings.result_fields(),
                "formats": list(settings.formats),
                "device": settings.device,
            },
        )


def run_batch(
    inputs: Iterable[str],
    settings: BatchSettings,
    out_dir: str | os.PathLike,
    **kwargs,
) -> BatchReport:
    """``segment`` / ``count`` over ``inputs`` into ``out_dir`` (see `loop.run_command`)."""
    return run_command(PlaneCommand(settings), inputs, out_dir, **kwargs)


# ------------------------------------------------------------------------------------------ model
def get_engine(settings: BatchSettings):
    """The process's engine for these settings (loaded once, then cached by core.engine)."""
    from napari_sam3.core.sam3.engine import Sam3Engine

    try:
        engine = Sam3Engine.load(settings.model, device=settings.device)
        current = engine.adapter.meta.get("file") if engine.adapter is not None else None
        if current != settings.adapter:  # this run's adapter, or none (the base model)
            engine.set_adapter(settings.adapter)
    except Sam3Error as exc:
        raise ModelLoadError(str(exc)) from exc
    return engine


def tile_option(tile) -> int | str | None:
    """``--tile`` as SAM3 counting takes it: None, "auto" or pixels (`core.validation`)."""
    from napari_sam3.core.validation import check_tile

    return check_tile(tile, "--tile")


def _segment(plane, settings: BatchSettings, request=None, on_progress=None):
    """SAM3 on one plane with ``request`` (a `core.requests.SegmentRequest`, checked once);
    returns ``(labels, table, candidates)`` like `_count`.

    Untiled: the engine directly (one encode for all concepts; candidates keep overlapping masks).
    ``tile``: `core.counting` tiles, stitches and de-duplicates across tiles.
    """
    request = settings.segment_request() if request is None else request
    engine = get_engine(settings)  # the io: model, device, adapter
    if request.tile is not None:
        labels, table, _ = _count_sam3(plane, settings, engine, request.tile, on_progress)
        if check_level(request.refine) == "Low":
            return labels, table, None
        labels = refine_label_image(labels, request.refine)
        return labels, table_with_labels(labels, table, plane.scale), None
    kw = {
        "rgb": plane.rgb,
        "min_score": request.min_score,
        "mask_threshold": request.mask_threshold,
    }
    text = list(request.concepts) or None  # all concepts in one call: one image encode
    # Batch runs never click: skip the tracker neck per image (this thread only, so a viewer
    # sharing the process's engine keeps its cheap first click).
    with engine.skipping_tracker_neck():
        if request.exemplar_from:  # boxes drawn on a reference image, encoded there once
            from napari_sam3.batch.exemplar_from import exemplar_prompt_from

            prompt = exemplar_prompt_from(engine, request.exemplar_from, text=text)
            cands = engine.segment_with(plane.data, prompt, **kw)
        elif request.exemplars:
            boxes = np.asarray(request.exemplars, dtype=np.float32)
            labels = list(request.labels())
            cands = engine.segment_exemplars(plane.data, boxes, labels, text=text, **kw)
        else:
            cands = engine.segment_text(plane.data, list(request.concepts), **kw)
    return None, None, filter_candidates(cands, request.min_score, refine=request.refine)


class _PlaneData:
    """``len`` and indexing over the planes' arrays (what `estimate_stack_diameter` takes)."""

    def __init__(self, planes):
        self._planes = planes

    def __len__(self) -> int:
        return len(self._planes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._planes[i].data


def _count(plane, settings: BatchSettings, run, index: int, on_progress=None, info=None):
    """Count plane ``index`` of its file's `CountRun` (request -> counter); returns
    ``(labels, table, None)``. ``info`` (a dict) receives the diameter used, where it came from
    ("given", "file": the file's one estimate, "plane": its own) and the count's warnings."""
    info = {} if info is None else info
    engine = get_engine(settings) if run.request.sam3 else None
    result = _drive(run.iter_plane(index, engine=engine), plane.stem, on_progress)
    labels = np.asarray(result.labels)
    if run.request.sam3:
        return labels, count_table(labels, result.table, plane.scale), None
    source = result.meta.get("diameter_source")
    info["diameter_source"] = "file" if source == "stack" else source
    info["diameter"] = _rounded(result.diameter)
    if result.meta.get("large_plane"):  # measured at paste time, tile by tile
        return labels, result.table, None
    info["warnings"] = list(result.warnings)
    table = count_table(labels, result.table, plane.scale, run.request.method)
    return labels, table, None


def _rounded(d) -> float | None:
    return round(float(d), 2) if d is not None and np.isfinite(d) else None


def _count_sam3(plane, settings: BatchSettings, engine, tile, on_progress):
    """``segment --tile``: SAM3 counting's tiles on one plane (`core.counting.run.CountRun`)."""
    from napari_sam3.core.counting.run import CountRun

    run = CountRun(settings.count_request(tile=tile), [plane.data], engine=engine, rgb=plane.rgb)
    result = _drive(run.iter_plane(0), plane.stem, on_progress)
    labels = np.asarray(result.labels)
    return labels, count_table(labels, result.table, plane.scale), None


def _drive(gen, stem: str, on_progress):
    """Run a core progress generator, forwarding its messages (tiles, planes) to the progress bar."""
    from napari_sam3.core.progress import run_to_end

    def show(p):
        if on_progress is not None:
            step = f" {p.step}/{p.total}" if p.total else ""
            on_progress(f"{stem}: {p.message}{step}")

    return run_to_end(gen, on_progress=show)
