"""``napari-sam3 track``: track concepts through every z/t stack of the inputs, resumably.

Each input stack (``(T, H, W)`` gray or ``(T, H, W, 3)`` RGB; 4-D+ data with ``--axis`` naming the
axis to track along, one run per index of the other stack axes) goes through
`core.stack_tracking.iter_track_stack` and gives ``<stem>_tracks.tif`` (T x H x W labels, the same id
for the same object in every frame) and ``<stem>_tracks.csv`` (one row per (frame, object)).

Resume and overwrite rules are those of the other subcommands (`batch.records`): a completion record
``<out>/.done/<stem>_tracks.json`` holds each output's size and hash; a rerun with the same settings
skips complete stacks, redoes ours that are incomplete, and never replaces files it did not write
without ``--overwrite``. Run-level files, rebuilt from the records at the end of every run:
``tracks.csv`` (one row per stack) and ``tracks_manifest.json`` (settings, versions, every stack with
its status; its own name, so a ``segment`` run's ``manifest.json`` in the same folder is kept).

On Dask (``--workers N`` / ``--dask ADDRESS``, `runner.run_on_dask`) each file is a task: the worker
process tracks its stacks and writes their outputs and records; results come back for the run files.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from napari_sam3.batch import records
from napari_sam3.batch.process import FileJob, ModelLoadError
from napari_sam3.batch.records import RecordState
from napari_sam3.batch.runner import (
    BatchReport,
    check_out_dir,
    plan_jobs,
    progress_bar,
    run_on_dask,
    take_results,
)
from napari_sam3.batch.track_inputs import StackInput, read_stacks
from napari_sam3.batch.track_settings import TrackSettings
from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import clean_stale_temporaries, write_json
from napari_sam3.io.manifest import now_iso, package_versions, provenance
from napari_sam3.io.tables import write_table_csv
from napari_sam3.io.tiff import write_labels_tiff

TOOL = "napari-sam3 track"
TRACK_MANIFEST = "tracks_manifest.json"
SUMMARY_CSV = "tracks.csv"
LABELS_SUFFIX = "_tracks.tif"
TABLE_SUFFIX = "_tracks.csv"
SUMMARY_COLUMNS = ["file", "stem", "slice", "frames", "tracks", "seconds", "status", "error"]


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    return {"labels": out / f"{stem}{LABELS_SUFFIX}", "table": out / f"{stem}{TABLE_SUFFIX}"}


def record_key(stem: str) -> str:
    """Completion record name: ``.done/<stem>_tracks.json`` (never a ``segment`` plane's)."""
    return f"{stem}_tracks"


# ------------------------------------------------------------------------------------------- run
class _Engine:
    """The run's engine, loaded on first need (complete stacks never load the model)."""

    def __init__(self, settings: TrackSettings):
        self.settings = settings
        self._engine = None

    def __call__(self):
        if self._engine is None:
            from napari_sam3.core.sam3.engine import Sam3Engine
            from napari_sam3.core.tracking.video_session import check_video_capable

            try:
                engine = Sam3Engine.load(self.settings.model, device=self.settings.device)
                check_video_capable(engine.model)  # every stack would fail the same way
                self._engine = engine
            except Sam3Error as exc:
                raise ModelLoadError(str(exc)) from exc
        return self._engine


def run_track(
    inputs: Iterable[str],
    settings: TrackSettings,
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    argv: list[str] | None = None,
    debug: bool = False,
) -> BatchReport:
    """Track ``settings.prompts`` through every stack of ``inputs`` into ``out_dir``.

    ``workers`` (a local Dask cluster of that many processes) or ``dask_address`` (an existing
    scheduler): each input file is tracked in a worker process (the model loaded once per process),
    which writes its stacks' outputs and completion records; the run-level files are written here.

    Never raises for a bad input (a failed entry with the reason); raises `Sam3Error` for unusable
    options. A model that cannot be loaded stops the run: ``report.fatal`` (CLI exit 2).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    check_out_dir(out, settings.overwrite, TRACK_MANIFEST, TOOL)
    owned = (out / records.DONE_DIR).is_dir()
    out.mkdir(parents=True, exist_ok=True)
    for sub in (out, out / records.DONE_DIR):
        clean_stale_temporaries(sub)
    jobs, problems = plan_jobs(inputs, exclude_dir=out)
    res = out.resolve()
    jobs = [j for j in jobs if not (Path(j.path).parent == res and j.path.endswith(LABELS_SUFFIX))]
    if not jobs and not problems:
        raise Sam3Error("No input stacks given.")
    report = BatchReport(out, input_problems=problems)
    bar = progress_bar(len(jobs), progress)
    try:
        if dask_address or workers:
            _track_dask(jobs, settings, out, report, bar, workers, dask_address, owned, debug)
        else:
            _track_local(jobs, settings, out, report, bar, owned)
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - t0
    assemble_tracks(out, settings, report, argv)
    return report


def _track_local(jobs, settings, out, report, bar, owned) -> None:
    engine = _Engine(settings)

    def show(text: str) -> None:
        if bar is not None:
            bar.set_description_str(text[:60], refresh=True)

    for job in jobs:
        results = track_file(job, settings, out, engine, on_progress=show, owned=owned)
        if take_results(report, results, bar):
            return


def track_file_job(
    job: FileJob, settings: TrackSettings, out_dir: str, owned: bool = False
) -> list[dict]:
    """`track_file` in a Dask worker, with the process's engine (`Sam3Engine.load` caches it)."""
    return track_file(job, settings, Path(out_dir), _Engine(settings), owned=owned)


def _track_dask(jobs, settings, out, report, bar, workers, address, owned, debug) -> None:
    def failed(job: FileJob, exc: BaseException) -> list[dict]:  # a worker died: report the file
        return [
            {
                **_entry(job.base, job.path),
                "status": "failed",
                "error": f"worker failed: {type(exc).__name__}: {exc}",
            }
        ]

    def handle(job: FileJob, results: list[dict]) -> bool:  # True: the other files are cancelled
        return take_results(report, results, bar)

    run_on_dask(
        track_file_job,
        jobs,
        (settings, str(out.resolve())),
        {"owned": owned},
        workers=workers,
        address=address,
        debug=debug,
        key="napari-sam3-track",
        failed=failed,
        handle=handle,
    )


def track_file(
    job: FileJob,
    settings: TrackSettings,
    out: Path,
    engine: Callable,
    on_progress: Callable[[str], None] | None = None,
    owned: bool = False,
) -> list[dict]:
    """Track every stack of one file; one result dict per stack (or one failed/fatal for the file).

    Result keys: ``stem, source, slice, status`` (``done``, ``skipped``, ``failed`` or ``fatal``),
    ``frames``, ``tracks``, ``seconds``, ``error``, ``traceback`` (unexpected errors only).
    """
    try:
        stacks = read_stacks(job.path, job.base, settings.axis)
        return [_track_stack(s, settings, out, engine, on_progress, owned) for s in stacks]
    except ModelLoadError as exc:
        return [{**_entry(job.base, job.path), "status": "fatal", "error": str(exc)}]
    except Sam3Error as exc:
        return [{**_entry(job.base, job.path), "status": "failed", "error": str(exc)}]
    except Exception as exc:  # noqa: BLE001 - a bug must not end a night's batch
        return [
            {
                **_entry(job.base, job.path),
                "status": "failed",
                "error": f"unexpected error: {type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        ]


def _entry(stem: str, source, slice_label: str = "") -> dict:
    return {
        "stem": stem,
        "source": str(source),
        "slice": slice_label,
        "frames": None,
        "tracks": None,
        "seconds": 0.0,
        "error": None,
        "traceback": None,
    }


def _track_stack(stack: StackInput, settings, out: Path, engine, on_progress, owned) -> dict:
    from napari_sam3.core.progress import run_to_end
    from napari_sam3.core.tracking.stack_tracking import iter_track_stack

    base = _entry(stack.stem, stack.source, stack.slice_label)
    key = record_key(stack.stem)
    paths = output_paths(out, stack.stem)
    fp = settings.fingerprint()
    sig = records.source_signature(stack.source)
    state, rec = records.check_record(out, key, fp, paths, sig)
    if state is RecordState.FOREIGN and owned:
        state = RecordState.PARTIAL
    if state is RecordState.COMPLETE:
        return {
            **base,
            "status": "skipped",
            "frames": rec.get("frames"),
            "tracks": rec.get("tracks"),
            "seconds": rec.get("seconds", 0.0),
        }
    if state in (RecordState.FOREIGN, RecordState.CONFLICT) and not settings.overwrite:
        why = (
            "outputs exist that this folder's runs did not write"
            if state is RecordState.FOREIGN
            else "outputs exist from a run with different settings (prompts, model, threshold, "
            "start or axis)"
        )
        existing = [p.relative_to(out).as_posix() for p in paths.values() if p.exists()]
        existing = existing or [records.record_path(out, key).relative_to(out).as_posix()]
        return {
            **base,
            "status": "failed",
            "error": f"{why}: {', '.join(existing)}; use --overwrite to replace them "
            "or choose another --out",
        }
    n = int(stack.data.shape[0])
    if settings.start >= n:
        return {
            **base,
            "status": "failed",
            "error": f"--start {settings.start} is past the last frame ({n - 1}) of this stack.",
        }
    model = engine()  # a model that cannot load must not leave records behind
    info = {"source": str(stack.source), "slice": stack.slice_label, "source_file": sig}
    t0 = time.perf_counter()
    try:
        records.write_started(out, key, fp, info)

        def show(p) -> None:
            if on_progress is not None:
                step = f" {p.step}/{p.total}" if p.total else ""
                on_progress(f"{stack.stem}: {p.message}{step}")

        gen = iter_track_stack(
            model,
            stack.data,
            list(settings.prompts),
            rgb=True if stack.rgb else None,
            min_score=settings.threshold,
            start=settings.start,
        )
        result = run_to_end(gen, on_progress=show)
        frames, tracks = int(result.labels.shape[0]), int(result.n_tracks)
        write_labels_tiff(
            paths["labels"],
            result.labels,
            scale=stack.scale,
            axes=stack.axes,
            unit=stack.unit or "micron",
            overwrite=True,  # ours (no record, a started or mismatching one) or --overwrite
            metadata={"source": stack.source.name, "slice": stack.slice_label},
        )
        write_table_csv(paths["table"], result.table, overwrite=True)
        seconds = time.perf_counter() - t0
        prov = provenance(
            source=str(stack.source),
            slice_label=stack.slice_label or None,
            model=settings.model_label(),
            method="sam3-track",
            prompts=list(settings.prompts),
            threshold=settings.threshold,
            start=settings.start,
            axis=settings.axis,
            frames=frames,
            detection_threshold=result.meta.get("detection_threshold"),
            new_object_threshold=result.meta.get("new_object_threshold"),
        )
        records.write_done(
            out,
            key,
            fp,
            paths,
            {
                **info,
                "frames": frames,
                "tracks": tracks,
                "seconds": round(seconds, 3),
                "provenance": prov,
            },
        )
        return {**base, "status": "done", "frames": frames, "tracks": tracks, "seconds": seconds}
    except Sam3Error as exc:
        _release(out, key, paths)
        return {**base, "status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001
        _release(out, key, paths)
        return {
            **base,
            "status": "failed",
            "error": f"unexpected error: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }


def _release(out: Path, key: str, paths: dict[str, Path]) -> None:
    """A stack that failed before writing any output: drop its started record, so that a rerun with
    corrected options is not refused as "a run with different settings"."""
    if not any(p.exists() for p in paths.values()):
        with contextlib.suppress(OSError):
            records.record_path(out, key).unlink()


# -------------------------------------------------------------------------------- run-level files
def assemble_tracks(
    out: Path, settings: TrackSettings, report: BatchReport, argv: list[str] | None
) -> None:
    """Rebuild ``tracks.csv`` and ``tracks_manifest.json`` from this run's results and records."""
    order = sorted(report.results, key=lambda r: (r["source"], r["stem"]))
    rows = []
    for r in order:
        rec = None
        if r["status"] in ("done", "skipped"):
            rec = records.read_record(out, record_key(r["stem"]))
            rec = rec if rec is not None and rec.get("status") == "done" else None
        rows.append(
            {
                "file": r["source"],
                "stem": r["stem"],
                "slice": r.get("slice", ""),
                "frames": rec.get("frames") if rec else r.get("frames"),
                "tracks": rec.get("tracks") if rec else r.get("tracks"),
                "seconds": round(float(rec.get("seconds") or 0.0), 3) if rec else None,
                "status": r["status"],
                "error": r.get("error") or "",
            }
        )
    for item, why in report.input_problems:
        rows.append({**dict.fromkeys(SUMMARY_COLUMNS), "file": item, "stem": "", "slice": ""})
        rows[-1].update(status="failed", error=why)
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype(
        {"frames": "Int64", "tracks": "Int64"}
    )
    write_table_csv(out / SUMMARY_CSV, table, overwrite=True)
    c = report.counts
    manifest = {
        "tool": TOOL,
        "command": argv,
        "settings": {**settings.result_fields(), "device": settings.device},
        "fingerprint": settings.fingerprint(),
        "versions": package_versions(),
        "date": now_iso(),
        "seconds": round(report.seconds, 3),
        "summary": {
            "stacks": len(report.results),
            "done": c["done"],
            "skipped": c["skipped"],
            "failed": len(report.failures),
        },
        "fatal": report.fatal,
        "stacks": [
            {
                k: r.get(k)
                for k in ("stem", "source", "slice", "status", "frames", "tracks", "error")
            }
            for r in order
        ],
        "input_problems": [{"input": i, "error": why} for i, why in report.input_problems],
    }
    write_json(out / TRACK_MANIFEST, manifest, overwrite=True)
