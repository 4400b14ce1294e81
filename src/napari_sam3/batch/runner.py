"""Plan a run, process files locally or on Dask, then assemble the run-level files.

Run-level files, rebuilt from the per-image completion records at the end of every run (so a resumed
run never duplicates a row or an annotation): ``manifest.json`` (settings, versions, every plane with
its status), ``counts.csv`` (one row per plane), ``coco.json`` (``--format coco``) and
``pairs/manifest.json`` (``--format pairs``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from napari_sam3.batch import records
from napari_sam3.batch.process import FileJob, process_file
from napari_sam3.batch.settings import BatchSettings
from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import clean_stale_temporaries, write_json
from napari_sam3.io.coco import merge_coco
from napari_sam3.io.manifest import now_iso, package_versions
from napari_sam3.io.pairs import pair_entry, update_pairs_manifest
from napari_sam3.io.readers import expand_inputs, file_base
from napari_sam3.io.tables import write_table_csv

RUN_MANIFEST = "manifest.json"
RUN_TOOL = "napari-sam3 batch"


@dataclass
class BatchReport:
    """What happened: one result dict per plane (see `process_file`) plus input problems."""

    out_dir: Path
    results: list[dict] = field(default_factory=list)
    input_problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    fatal: str | None = None  # model could not be loaded

    @property
    def failures(self) -> list[dict]:
        fails = [r for r in self.results if r["status"] == "failed"]
        return fails + [
            {"stem": "", "source": i, "status": "failed", "error": why}
            for i, why in self.input_problems
        ]

    @property
    def counts(self) -> Counter:
        return Counter(r["status"] for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.fatal:
            return 2
        return 1 if self.failures else 0


def plan_jobs(
    inputs: Iterable[str], exclude_dir: Path | None = None
) -> tuple[list[FileJob], list[tuple[str, str]]]:
    """Expand inputs; give each file a unique output base (``<parent>_<stem>`` on a clash).

    Our own outputs in ``exclude_dir`` (the output folder) are left out: outputs are never inputs.
    """
    files, problems = expand_inputs(inputs)
    if exclude_dir is not None:
        ex = exclude_dir.resolve()
        files = [f for f in files if not _is_output(f, ex)]
    bases = [file_base(f) for f in files]
    clash = {b for b, n in Counter(bases).items() if n > 1}
    named = [f"{f.parent.name}_{b}" if b in clash else b for f, b in zip(files, bases, strict=True)]
    seen: Counter = Counter()
    jobs = []
    for f, b in zip(files, named, strict=True):
        seen[b] += 1
        jobs.append(FileJob(str(f), b if seen[b] == 1 else f"{b}_{seen[b]}"))
    return jobs, problems


def _is_output(f: Path, out: Path) -> bool:
    if f.parent == out:
        return f.name.endswith(("_labels.tif", "_labels.png", "_tracks.tif"))
    return (out / "pairs") in f.parents


def check_out_dir(
    out_dir: Path, overwrite: bool, manifest: str = RUN_MANIFEST, tool: str = RUN_TOOL
) -> None:
    """Refuse an output folder holding another tool's manifest (unless overwrite)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise Sam3Error(f"--out {out_dir} is a file; give a folder.")
    man = out_dir / manifest
    if man.exists() and not overwrite:
        try:
            ours = json.loads(man.read_text(encoding="utf-8")).get("tool") == tool
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise Sam3Error(
                f"{man} exists and was not written by napari-sam3; "
                "use --overwrite or another --out."
            )


def run_batch(
    inputs: Iterable[str],
    settings: BatchSettings,
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    argv: list[str] | None = None,
    debug: bool = False,
) -> BatchReport:
    """Run ``settings`` over ``inputs`` writing into ``out_dir``; never raises for a bad image.

    Raises `Sam3Error` for unusable options (exit 2 in the CLI). A model that cannot be loaded is
    reported in ``report.fatal``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    check_out_dir(out, settings.overwrite)
    owned = (out / records.DONE_DIR).is_dir()
    out.mkdir(parents=True, exist_ok=True)
    for sub in (
        out,
        out / records.DONE_DIR,
        out / ".parts",
        out / "pairs" / "images",
        out / "pairs" / "masks",
    ):
        clean_stale_temporaries(sub)
    jobs, problems = plan_jobs(inputs, exclude_dir=out)
    report = BatchReport(out, input_problems=problems)
    if not jobs and not problems:
        raise Sam3Error("No input images given.")
    bar = progress_bar(len(jobs), progress)
    try:
        if dask_address or workers:
            _run_dask(
                jobs, settings, out, report, bar, workers, dask_address, on_result, owned, debug
            )
        else:
            _run_local(jobs, settings, out, report, bar, on_result, owned)
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - t0
    assemble(out, settings, report, argv)
    return report


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over files on stderr (None when disabled)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="napari-sam3", file=sys.stderr, dynamic_ncols=True)


def take_results(report: BatchReport, results: list[dict], bar, on_result=None) -> bool:
    """Add one file's results to the report; True when the run must stop (a fatal result)."""
    if _fatal(report, results):
        return True
    _collect(report, results, bar, on_result)
    return False


def _collect(report: BatchReport, results: list[dict], bar, on_result) -> None:
    report.results.extend(results)
    if bar is not None:
        c = report.counts
        bar.set_postfix(done=c["done"], skipped=c["skipped"], failed=c["failed"], refresh=False)
        bar.update(1)
    if on_result:
        for r in results:
            on_result(r)


def _fatal(report: BatchReport, results: list[dict]) -> bool:
    """Record a model-loading failure (the run stops; CLI exit 2); keep the other results."""
    fatal = [r for r in results if r["status"] == "fatal"]
    if fatal:
        report.fatal = fatal[0]["error"]
        report.results.extend(r for r in results if r["status"] != "fatal")
    return bool(fatal)


def _run_local(jobs, settings, out, report, bar, on_result, owned) -> None:
    def show(stem: str) -> None:
        if bar is not None:
            bar.set_description_str(stem[:40], refresh=True)

    for job in jobs:
        results = process_file(job, settings, str(out), on_progress=show, owned=owned)
        if take_results(report, results, bar, on_result):
            return


def _run_dask(jobs, settings, out, report, bar, workers, address, on_result, owned, debug) -> None:
    def failed(job: FileJob, exc: BaseException) -> list[dict]:  # a worker died: report the file
        return [
            {
                "stem": job.base,
                "source": job.path,
                "slice": "",
                "status": "failed",
                "count": None,
                "seconds": 0.0,
                "traceback": None,
                "error": f"worker failed: {type(exc).__name__}: {exc}",
            }
        ]

    def handle(job: FileJob, results: list[dict]) -> bool:  # True: the other files are cancelled
        return take_results(report, results, bar, on_result)

    run_on_dask(
        process_file,
        jobs,
        (settings, str(out.resolve())),
        {"owned": owned},
        workers=workers,
        address=address,
        debug=debug,
        key="napari-sam3",
        failed=failed,
        handle=handle,
    )


def run_on_dask(
    func: Callable,
    jobs: list,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    workers: int | None,
    address: str | None,
    debug: bool,
    key: str,
    failed: Callable[[object, BaseException], object],
    handle: Callable[[object, object], bool],
) -> None:
    """Run ``func(job, *args, **kwargs)`` for every job on Dask, one task per job.

    ``address``: an existing scheduler; otherwise a local cluster of ``workers`` processes (one
    thread each), closed at the end. Each job's result goes to ``handle(job, result)`` in the client
    as it completes (a task that raised gives ``failed(job, exc)`` instead); ``handle`` returning
    True stops the run: the tasks not yet done are cancelled, running ones end before the cluster
    closes. Task keys are ``<key>-<index>-<job.base>``. Raises `Sam3Error` when Dask is missing or
    the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise Sam3Error("Dask is not installed: pip install 'napari-sam3[dask]'.") from exc
    if not debug:  # after the import (it configures logging): no warnings about cancelled tasks
        logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = None
    try:
        if address:
            try:
                client = Client(address, timeout="20s")
            except OSError as exc:
                raise Sam3Error(f"Cannot reach the Dask scheduler at {address} ({exc}).") from exc
        else:
            quiet = logging.getLogger("distributed").level >= logging.ERROR
            old = os.environ.get("DASK_LOGGING__DISTRIBUTED")
            if quiet:  # worker processes read their log level from the environment
                os.environ["DASK_LOGGING__DISTRIBUTED"] = (
                    "critical"  # failures come back as results
                )
            try:
                cluster = LocalCluster(
                    n_workers=int(workers),
                    processes=True,
                    threads_per_worker=1,
                    dashboard_address=None,
                )
            finally:
                if quiet:
                    if old is None:
                        os.environ.pop("DASK_LOGGING__DISTRIBUTED", None)
                    else:
                        os.environ["DASK_LOGGING__DISTRIBUTED"] = old
            client = Client(cluster)
        with client:
            futures = [
                client.submit(
                    func,
                    job,
                    *args,
                    **(kwargs or {}),
                    key=f"{key}-{i}-{job.base}",
                    pure=False,
                    retries=0,
                )
                for i, job in enumerate(jobs)
            ]
            job_of = {fut.key: job for fut, job in zip(futures, jobs, strict=True)}
            stopped = False
            for fut in as_completed(futures):
                if stopped:  # drain: running tasks end before the cluster closes
                    continue
                job = job_of[fut.key]
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died: report the job
                    result = failed(job, exc)
                if handle(job, result):
                    stopped = True
                    for f in futures:
                        if not f.done():
                            f.cancel()
    finally:
        if cluster is not None:
            cluster.close()


def assemble(
    out: Path, settings: BatchSettings, report: BatchReport, argv: list[str] | None
) -> None:
    """Rebuild the run-level files from the completion records of this run's planes."""
    order = sorted(report.results, key=lambda r: (r["source"], r["stem"]))
    recs = {}
    for r in order:
        if r["status"] in ("done", "skipped"):
            rec = records.read_record(out, r["stem"])
            if rec is not None and rec.get("status") == "done":
                recs[r["stem"]] = rec
    if "coco" in settings.formats:
        parts = []
        for stem in recs:
            try:
                parts.append(json.loads((out / ".parts" / f"{stem}.coco.json").read_text("utf-8")))
            except (OSError, ValueError):
                continue
        write_json(out / "coco.json", merge_coco(parts), overwrite=True)
    if "pairs" in settings.formats:
        entries = [
            pair_entry(out / "pairs", stem, rec.get("provenance")) for stem, rec in recs.items()
        ]
        update_pairs_manifest(out / "pairs", entries, replace_all=True)
    rows = [
        {
            "stem": r["stem"],
            "source": r["source"],
            "slice": r.get("slice", ""),
            "count": recs[r["stem"]].get("count") if r["stem"] in recs else None,
            "status": r["status"],
            "error": r.get("error") or "",
        }
        for r in order
    ]
    write_table_csv(
        out / "counts.csv",
        pd.DataFrame(rows, columns=["stem", "source", "slice", "count", "status", "error"]).astype(
            {"count": "Int64"}
        ),
        overwrite=True,
    )
    c = report.counts
    manifest = {
        "tool": RUN_TOOL,
        "command": argv,
        "settings": {
            **settings.result_fields(),
            "formats": list(settings.formats),
            "device": settings.device,
        },
        "fingerprint": settings.fingerprint(),
        "versions": package_versions(),
        "date": now_iso(),
        "seconds": round(report.seconds, 3),
        "summary": {
            "planes": len(report.results),
            "done": c["done"],
            "skipped": c["skipped"],
            "failed": len(report.failures),
        },
        "fatal": report.fatal,
        "images": [
            {k: r.get(k) for k in ("stem", "source", "slice", "status", "count", "error")}
            for r in order
        ],
        "input_problems": [{"input": i, "error": why} for i, why in report.input_problems],
    }
    write_json(out / RUN_MANIFEST, manifest, overwrite=True)
