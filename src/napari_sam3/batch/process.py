"""What one worker does with one input file: every plane -> model -> outputs -> completion record.

Runs in the CLI process or in a Dask worker process (the model is loaded once per process and kept:
`core.engine.Sam3Engine.load` caches it). Expected problems become a failed entry with the reason;
only a model that cannot be loaded stops the run (a result with status ``fatal``).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sam3.batch import records
from napari_sam3.batch.records import RecordState
from napari_sam3.batch.settings import BatchSettings
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.results.refine import check_level, filter_candidates, refine_label_image
from napari_sam3.io.export import export_plane, output_paths
from napari_sam3.io.manifest import provenance
from napari_sam3.io.readers import iter_planes
from napari_sam3.io.tables import table_with_labels


class ModelLoadError(Sam3Error):
    """The model could not be loaded: the whole run stops (CLI exit code 2)."""


@dataclass(frozen=True)
class FileJob:
    path: str  # absolute path of the input file
    base: str  # output base name (file stem, made unique in the run)


def process_file(
    job: FileJob,
    settings: BatchSettings,
    out_dir: str,
    on_progress: Callable[[str], None] | None = None,
    owned: bool = False,
) -> list[dict]:
    """Process every plane of one file; returns one result dict per plane (or one for the file).

    ``owned``: the output folder already belongs to napari-sam3 runs (it has ``.done/``), so output
    files without a completion record are leftovers of ours (record lost) and are redone.

    Result keys: ``stem, source, slice, status`` (``done``, ``skipped`` or ``failed``), ``count``,
    ``seconds``, ``error`` (the reason when failed), ``traceback`` (unexpected errors only).
    """
    out = Path(out_dir)
    results: list[dict] = []
    fp = settings.fingerprint()
    try:
        planes = iter_planes(job.path, base=job.base)
        for plane in planes:
            results.append(_process_plane(plane, settings, out, fp, on_progress, owned))
    except ModelLoadError as exc:  # returned, not raised: no worker traceback in the logs
        results.append({**_failed(job, str(exc)), "status": "fatal"})
    except Sam3Error as exc:
        results.append(_failed(job, str(exc)))
    except Exception as exc:  # noqa: BLE001 - a bug must not end a night's batch
        results.append(
            _failed(job, f"unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc())
        )
    return results


def _failed(job: FileJob, reason: str, tb: str | None = None, stem: str | None = None) -> dict:
    return {
        "stem": stem or job.base,
        "source": job.path,
        "slice": "",
        "status": "failed",
        "count": None,
        "seconds": 0.0,
        "error": reason,
        "traceback": tb,
    }


def _process_plane(
    plane,
    settings: BatchSettings,
    out: Path,
    fp: str,
    on_progress: Callable[[str], None] | None,
    owned: bool = False,
) -> dict:
    base = {
        "stem": plane.stem,
        "source": str(plane.source),
        "slice": plane.slice_label,
        "count": None,
        "seconds": 0.0,
        "error": None,
        "traceback": None,
    }
    paths = output_paths(out, plane.stem, settings.formats)
    sig = records.source_signature(plane.source)
    state, rec = records.check_record(out, plane.stem, fp, paths, sig)
    if state is RecordState.FOREIGN and owned:
        state = RecordState.PARTIAL
    if state is RecordState.COMPLETE:
        return {**base, "status": "skipped", "count": rec.get("count")}
    if state in (RecordState.FOREIGN, RecordState.CONFLICT) and not settings.overwrite:
        why = (
            "outputs exist that this folder's runs did not write"
            if state is RecordState.FOREIGN
            else "outputs exist from a run with different settings (prompts, model or thresholds)"
        )
        existing = [p.relative_to(out).as_posix() for p in paths.values() if p.exists()]
        existing = existing or [records.record_path(out, plane.stem).relative_to(out).as_posix()]
        return {
            **base,
            "status": "failed",
            "error": f"{why}: {', '.join(existing)}; use --overwrite to replace them "
            "or choose another --out",
        }
    if on_progress:
        on_progress(plane.stem)
    t0 = time.perf_counter()
    info = {"source": str(plane.source), "slice": plane.slice_label, "source_file": sig}
    try:
        if settings.method == "sam3":
            get_engine(settings)  # a model that cannot load must not leave records behind
        records.write_started(out, plane.stem, fp, info)
        labels = cands = table = None
        run = _count if settings.command == "count" else _segment
        labels, table, cands = run(plane, settings, on_progress)
        # our own partial files (started / mismatching record) are replaced; others need --overwrite
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
        seconds = time.perf_counter() - t0
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
            diameter=settings.diameter,
            refine=settings.refine if settings.command == "segment" else None,
        )
        records.write_done(
            out,
            plane.stem,
            fp,
            paths,
            {**info, "count": count, "seconds": round(seconds, 3), "provenance": prov},
        )
        return {**base, "status": "done", "count": count, "seconds": seconds}
    except ModelLoadError:
        raise
    except Sam3Error as exc:
        return {**base, "status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001
        return {
            **base,
            "status": "failed",
            "error": f"unexpected error: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }


# ------------------------------------------------------------------------------------------ model
def get_engine(settings: BatchSettings):
    """The process's engine for these settings (loaded once, then cached by core.engine)."""
    from napari_sam3.core.sam3.engine import Sam3Engine

    try:
        engine = Sam3Engine.load(settings.model, device=settings.device)
    except Sam3Error as exc:
        raise ModelLoadError(str(exc)) from exc
    return engine


def tile_option(tile) -> int | str | None:
    if tile in (None, "", "none", "off", 0):
        return None
    return tile if tile == "auto" else int(tile)


def _segment(plane, settings: BatchSettings, on_progress=None):
    """SAM3 on one plane; returns ``(labels, table, candidates)`` like `_count`.

    Untiled: the engine directly (one encode for all concepts; candidates keep overlapping masks).
    ``--tile``: `core.counting` tiles, stitches and de-duplicates across tiles.
    """
    engine = get_engine(settings)
    tile = tile_option(settings.tile)
    if tile is not None:
        labels, table, _ = _count_sam3(plane, settings, engine, tile, on_progress)
        if check_level(settings.refine) == "Low":
            return labels, table, None
        labels = refine_label_image(labels, settings.refine)
        return labels, table_with_labels(labels, table, plane.scale), None
    kw = {
        "rgb": plane.rgb,
        "min_score": settings.threshold,
        "mask_threshold": settings.mask_threshold,
    }
    if not settings.prompts and not settings.exemplars:  # negative boxes alone find nothing
        raise Sam3Error("Give --prompt or --exemplar (--negative-exemplar alone is not enough).")
    # Batch runs never click: skip the tracker neck per image (this thread only, so a viewer
    # sharing the process's engine keeps its cheap first click).
    with engine.skipping_tracker_neck():
        if settings.exemplars or settings.negative_exemplars:
            ex_boxes, box_labels = settings.exemplar_boxes()
            boxes = np.asarray(ex_boxes, dtype=np.float32)
            text = list(settings.prompts) or None  # all concepts in one call: one image encode
            cands = engine.segment_exemplars(plane.data, boxes, box_labels, text=text, **kw)
        else:
            cands = engine.segment_text(plane.data, list(settings.prompts), **kw)
    return None, None, filter_candidates(cands, settings.threshold, refinement=settings.refine)


def _count(plane, settings: BatchSettings, on_progress=None):
    """Count one plane with `core.counting`; returns ``(labels, table, None)``."""
    if settings.method == "sam3":
        tile = "auto" if settings.tile is None else tile_option(settings.tile)
        return _count_sam3(plane, settings, get_engine(settings), tile, on_progress)
    from napari_sam3.core.counting.count import iter_count
    from napari_sam3.core.counting.large_plane import is_large_plane, iter_count_large_plane

    if is_large_plane(plane.data, plane.rgb):  # bounded by the tile, not the plane
        gen = iter_count_large_plane(
            plane.data, settings.diameter, rgb=plane.rgb, scale=plane.scale
        )
        labels, table, _ = _drive(gen, plane.stem, on_progress)
        return labels, table, None
    result = _drive(
        iter_count(plane.data, "classical", diameter=settings.diameter, rgb=plane.rgb),
        plane.stem,
        on_progress,
    )
    labels = np.asarray(result.labels)
    table = table_with_labels(labels, result.table, plane.scale, "classical", measured=True)
    return labels, table, None


def _count_sam3(plane, settings: BatchSettings, engine, tile, on_progress):
    from napari_sam3.core.counting.count import iter_count

    ex_boxes, ex_labels = settings.exemplar_boxes()
    gen = iter_count(
        plane.data,
        "sam3",
        diameter=settings.diameter,
        prompt=list(settings.prompts) or None,
        exemplars=ex_boxes or None,
        exemplar_labels=ex_labels or None,
        engine=engine,
        rgb=plane.rgb,
        min_score=settings.threshold,
        mask_threshold=settings.mask_threshold,
        tile=tile,
    )
    result = _drive(gen, plane.stem, on_progress)
    labels = np.asarray(result.labels)
    table = table_with_labels(labels, result.table, plane.scale, measured=True)
    return labels, table, None


def _drive(gen, stem: str, on_progress):
    """Run a core progress generator, forwarding its messages (tiles, planes) to the progress bar."""
    from napari_sam3.core.progress import run_to_end

    def show(p):
        if on_progress is not None:
            step = f" {p.step}/{p.total}" if p.total else ""
            on_progress(f"{stem}: {p.message}{step}")

    return run_to_end(gen, on_progress=show)
