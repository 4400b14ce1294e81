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

The run itself is `batch.loop` (the same loop as ``segment`` / ``count``): this module is the
per-stack `Command`. On Dask each file is a task: the worker process tracks its stacks and writes
their outputs and records; results come back for the run files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_sam3.batch.assemble import assemble_tracks
from napari_sam3.batch.loop import Command, Item, ModelLoadError, run_command
from napari_sam3.batch.runner import BatchReport, FileJob
from napari_sam3.batch.track_inputs import read_stacks
from napari_sam3.batch.track_settings import TrackSettings
from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.manifest import provenance
from napari_sam3.io.tables import write_table_csv
from napari_sam3.io.tiff import write_labels_tiff

TOOL = "napari-sam3 track"
TRACK_MANIFEST = "tracks_manifest.json"
SUMMARY_CSV = "tracks.csv"
LABELS_SUFFIX = "_tracks.tif"
TABLE_SUFFIX = "_tracks.csv"


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    return {"labels": out / f"{stem}{LABELS_SUFFIX}", "table": out / f"{stem}{TABLE_SUFFIX}"}


def record_key(stem: str) -> str:
    """Completion record name: ``.done/<stem>_tracks.json`` (never a ``segment`` plane's)."""
    return f"{stem}_tracks"


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
                engine.set_adapter(self.settings.adapter)  # this run's adapter, or none
                self._engine = engine
            except Sam3Error as exc:
                raise ModelLoadError(str(exc)) from exc
        return self._engine

    def __getstate__(self):  # a Dask worker loads its own (Sam3Engine.load caches per process)
        return {"settings": self.settings, "_engine": None}


class TrackCommand(Command):
    """``track`` with these settings, one item per stack."""

    tool = TOOL
    manifest = TRACK_MANIFEST
    summary = SUMMARY_CSV
    what = "stack(s)"

    def __init__(self, settings: TrackSettings):
        super().__init__(settings)
        self.engine = _Engine(settings)

    def run_files(self) -> list[str]:
        return [TRACK_MANIFEST, SUMMARY_CSV]

    def items(self, job: FileJob, out: Path) -> Iterator[Item]:
        for stack in read_stacks(job.path, job.base, self.settings.axis):
            paths = output_paths(out, stack.stem)
            yield Item(
                stack.stem,
                Path(stack.source),
                stack.slice_label,
                record_key(stack.stem),
                paths,
                stack,
                job.base,
            )

    def check(self, item: Item) -> str | None:
        n = int(item.data.data.shape[0])
        if self.settings.start >= n:
            return f"--start {self.settings.start} is past the last frame ({n - 1}) of this stack."
        return None

    def prepare(self) -> None:
        self.engine()

    def produce(self, item: Item, out: Path, on_progress) -> tuple[dict, dict]:
        from napari_sam3.core.progress import run_to_end
        from napari_sam3.core.tracking.stack_tracking import iter_track_stack

        settings, stack = self.settings, item.data

        def show(p) -> None:
            if on_progress is not None:
                step = f" {p.step}/{p.total}" if p.total else ""
                on_progress(f"{stack.stem}: {p.message}{step}")

        gen = iter_track_stack(
            self.engine(),
            stack.data,
            list(settings.prompts),
            rgb=True if stack.rgb else None,
            min_score=settings.threshold,
            start=settings.start,
        )
        result = run_to_end(gen, on_progress=show)
        frames, tracks = int(result.labels.shape[0]), int(result.n_tracks)
        write_labels_tiff(
            item.outputs["labels"],
            result.labels,
            scale=stack.scale,
            axes=stack.axes,
            unit=stack.unit or "micron",
            overwrite=True,  # ours (a started record) or --overwrite
            metadata={"source": stack.source.name, "slice": stack.slice_label},
        )
        write_table_csv(item.outputs["table"], result.table, overwrite=True)
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
        return {"frames": frames, "tracks": tracks}, prov

    def assemble(self, out: Path, report: BatchReport, argv: list[str] | None) -> None:
        settings = {**self.settings.result_fields(), "device": self.settings.device}
        assemble_tracks(out, self, report, argv, settings)


def run_track(
    inputs: Iterable[str],
    settings: TrackSettings,
    out_dir: str | os.PathLike,
    **kwargs,
) -> BatchReport:
    """Track ``settings.prompts`` through every stack of ``inputs`` into ``out_dir``.

    Never raises for a bad input (a failed entry with the reason); raises `Sam3Error` for unusable
    options. A model that cannot be loaded stops the run: ``report.fatal`` (CLI exit 2).
    """
    return run_command(TrackCommand(settings), inputs, out_dir, **kwargs)
