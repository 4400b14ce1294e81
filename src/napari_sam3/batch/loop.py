"""THE run loop of ``segment``, ``count`` and ``track``: plan -> per-item job -> record -> assemble.

A `Command` says what differs between the subcommands (which items a file gives, how one item's
outputs are produced, which run-level files are assembled); everything else is here, once:

* `run_command`: make and lock the output folder, refuse user files in the way, plan the jobs (one
  per input file) with output names unique across the whole run, run them locally or on Dask
  (`runner.run_on_dask`, the same `run_file` in a worker process), then assemble the run files.
* `run_file`: every item (plane or stack) of one file -> a typed `ItemResult` each.
* `run_item`: the record protocol (`batch.records`): skip complete items, refuse files the run does
  not own, write a *started* record, produce the outputs, write the *done* record. A failed item
  whose outputs were never written drops its started record, so a rerun with corrected options
  is not refused.

OS-level failures writing into the output folder (disk full, read-only, permissions) stop the run
with one line naming the path and the fix (``report.fatal``, CLI exit 2); what finished before is
recorded and summarised.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_sam3.batch import records
from napari_sam3.batch.outdir import OutputError, describe_os_error, folder_lock, prepare_out_dir
from napari_sam3.batch.records import RecordState
from napari_sam3.batch.runner import (
    BatchReport,
    FileJob,
    check_names,
    check_run_files,
    plan_jobs,
    progress_bar,
    run_on_dask,
    take_results,
)
from napari_sam3.core.errors import Sam3Error


class ModelLoadError(Sam3Error):
    """The model could not be loaded: the whole run stops (CLI exit code 2)."""


@dataclass
class ItemResult:
    """What happened to one plane (segment/count) or stack (track)."""

    stem: str
    source: str
    slice: str = ""
    status: str = "failed"  # done | skipped | failed | fatal
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    values: dict = field(default_factory=dict)  # count; or frames and tracks

    def as_dict(self) -> dict:
        d = asdict(self)
        return {**d.pop("values"), **d}

    def __getitem__(self, key: str):
        return self.as_dict()[key]

    def get(self, key: str, default=None):
        return self.as_dict().get(key, default)


@dataclass(frozen=True)
class Item:
    """One plane or stack to produce: its outputs and completion record name."""

    stem: str
    source: Path
    slice: str
    key: str  # completion record: .done/<key>.json
    outputs: dict[str, Path]
    data: object = None  # the plane / stack, for `Command.produce`
    base: str = ""  # the file's output base (recorded: the name belongs to this source)


class Command:
    """What a subcommand adds to the loop (see `batch.process.PlaneCommand`, `batch.track`)."""

    tool = "napari-sam3"
    manifest = "manifest.json"
    what = "item(s)"
    overwrite = False

    def __init__(self, settings) -> None:
        self.settings = settings
        self.overwrite = settings.overwrite
        self._fingerprint = settings.fingerprint()  # once: it hashes the net / adapter files

    @property
    def fingerprint(self) -> str:
        """What makes a resumed run the same run (the settings' result fields, hashed)."""
        return self._fingerprint

    def run_files(self) -> list[str]:
        """Run-level files (relative to the output folder) that `assemble` writes."""
        return [self.manifest]

    def output_suffixes(self) -> tuple[str, ...]:
        """Endings of our outputs (never taken as inputs)."""
        return ()

    def stems(self, job: FileJob) -> list[str]:
        """Output names of a file's items, from its header (for the run-wide uniqueness check)."""
        return [job.base]

    def items(self, job: FileJob, out: Path) -> Iterator[Item]:
        raise NotImplementedError

    def check(self, item: Item) -> str | None:
        """A reason the item cannot be done with these options (checked before any record)."""
        return None

    def prepare(self) -> None:
        """Load what producing needs (the model); raise `ModelLoadError` when impossible."""

    def produce(self, item: Item, out: Path, on_progress) -> tuple[dict, dict]:
        """Write the item's outputs (replacing ours); return (values, provenance)."""
        raise NotImplementedError

    def assemble(self, out: Path, report: BatchReport, argv: list[str] | None) -> None:
        raise NotImplementedError


REFUSED = {
    RecordState.FOREIGN: "outputs exist that this folder's runs did not write",
    RecordState.CONFLICT: "outputs exist from a run with different settings",
    RecordState.MODIFIED: "outputs were changed after the run that wrote them (edited by hand?)",
}


def run_item(cmd: Command, item: Item, out: Path, on_progress=None) -> ItemResult:
    """One item through the record protocol; an `ItemResult` (``fatal`` for an OS failure)."""
    res = ItemResult(item.stem, str(item.source), item.slice)
    res.error = _name_too_long(item, out)
    if res.error:  # this image fails; the others go on
        return res
    sig = records.source_signature(item.source)
    state, rec = records.check_record(
        out, item.key, cmd.fingerprint, item.outputs, sig, source_path=item.source
    )
    if state is RecordState.OTHER_SOURCE:  # never taken over, even with --overwrite
        res.error = (
            f"the name '{item.stem}' in {out} holds the results of {rec.get('source')}, "
            f"another file than {item.source}; process it into another --out or rename it"
        )
        return res
    if state is RecordState.COMPLETE:
        res.status, res.values = "skipped", _values(rec)
        res.seconds = float(rec.get("seconds") or 0.0)
        return res
    if state in REFUSED and not cmd.overwrite:
        paths = [p for p in item.outputs.values() if p.exists()]
        if state is RecordState.MODIFIED:  # name only the files someone changed
            with contextlib.suppress(OSError):
                paths = records.changed_outputs(out, rec, item.outputs) or paths
        existing = [p.relative_to(out).as_posix() for p in paths]
        existing = existing or [records.record_path(out, item.key).relative_to(out).as_posix()]
        res.error = (
            f"{REFUSED[state]}: {', '.join(existing)}; use --overwrite to replace them "
            "or choose another --out"
        )
        return res
    why = cmd.check(item)
    if why:
        res.error = why
        return res
    cmd.prepare()  # a model that cannot load must not leave records behind
    info = {"source": str(item.source), "slice": item.slice, "source_file": sig}
    if item.base:
        info["base"] = item.base
    t0 = time.perf_counter()
    try:
        records.write_started(out, item.key, cmd.fingerprint, info)
        values, prov = cmd.produce(item, out, on_progress)
        res.seconds = time.perf_counter() - t0
        info = {**info, **values, "seconds": round(res.seconds, 3), "provenance": prov}
        records.write_done(out, item.key, cmd.fingerprint, item.outputs, info)
        res.status, res.values = "done", values
        return res
    except ModelLoadError:
        _release(out, item)
        raise
    except OSError as exc:
        _release(out, item)
        if exc.errno == errno.ENAMETOOLONG:  # one image's name, not the folder: the run goes on
            res.error = f"an output name is too long for the file system: {_rename_hint(item)}"
        elif _inside(exc.filename, out):
            res.status, res.error = "fatal", describe_os_error(exc)
        else:
            res.error = f"cannot read {exc.filename or item.source}: {exc.strerror or exc}"
        return res
    except Sam3Error as exc:
        _release(out, item)
        res.error = str(exc)
        return res
    except Exception as exc:  # noqa: BLE001 - a bug must not end a night's batch
        _release(out, item)
        res.error = f"unexpected error: {type(exc).__name__}: {exc}"
        res.traceback = traceback.format_exc()
        return res


# what `io.atomic` adds to a name for its temporary file: ".sam3tmp-" + name + "-" + 8 characters
TEMP_NAME_EXTRA = 18


def _name_too_long(item: Item, out: Path) -> str | None:
    """Why ``item``'s outputs cannot be named in ``out`` (file system name limit), or None."""
    try:
        limit = os.pathconf(out, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    names = [p.name for p in item.outputs.values()] + [f"{item.key}.json"]
    longest = max(len(n.encode("utf-8", "surrogateescape")) for n in names) + TEMP_NAME_EXTRA
    if longest <= limit:
        return None
    return (
        f"its output names would be {longest} bytes long (with the temporary name written "
        f"first), over the file system's limit of {limit}: {_rename_hint(item)}"
    )


def _rename_hint(item: Item) -> str:
    stem = item.stem if len(item.stem) <= 40 else item.stem[:37] + "..."
    return f"rename the input file to a shorter name (output name '{stem}')"


def _values(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("count", "frames", "tracks") if k in rec}


def _inside(filename, out: Path) -> bool:
    if not filename:
        return True  # no path: assume the output side (writes give one, reads of inputs too)
    try:
        Path(os.fspath(filename)).resolve().relative_to(out.resolve())
    except (ValueError, OSError, TypeError):
        return False
    return True


def _release(out: Path, item: Item) -> None:
    """Drop the started record of an item whose outputs were never written."""
    if not any(p.exists() for p in item.outputs.values()):
        with contextlib.suppress(OSError):
            records.record_path(out, item.key).unlink()


def run_file(
    job: FileJob, cmd: Command, out_dir: str, on_progress: Callable | None = None
) -> list[ItemResult]:
    """Every item of one file (a Dask task, or one step of the local loop)."""
    out = Path(out_dir)
    results: list[ItemResult] = []

    def failed(why: str, tb: str | None = None, status: str = "failed") -> list[ItemResult]:
        return [*results, ItemResult(job.base, job.path, status=status, error=why, traceback=tb)]

    try:
        for item in cmd.items(job, out):
            results.append(run_item(cmd, item, out, on_progress))
            if results[-1].status == "fatal":
                break
    except ModelLoadError as exc:  # returned, not raised: no worker traceback in the logs
        return failed(str(exc), status="fatal")
    except Sam3Error as exc:
        return failed(str(exc))
    except OSError as exc:
        return failed(f"cannot read {exc.filename or job.path}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001
        return failed(f"unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc())
    return results


def run_command(
    cmd: Command,
    inputs: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    on_result: Callable | None = None,
    argv: list[str] | None = None,
    debug: bool = False,
    wait: bool = False,
) -> BatchReport:
    """Run ``cmd`` over ``inputs`` into ``out_dir``; never raises for a bad image.

    Raises `Sam3Error` for unusable options, a busy or unusable output folder, user files in the
    way and colliding output names (all before any work). ``wait``: wait for a run holding the
    folder's lock to end instead of refusing. A model that cannot be loaded or an
    output folder that stops accepting writes ends the run: ``report.fatal``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    prepare_out_dir(out)
    with folder_lock(out, cmd.tool, wait=wait):
        check_run_files(out, cmd)
        jobs, problems = plan_jobs(
            inputs,
            exclude_dir=out,
            suffixes=cmd.output_suffixes(),
            claims=records.claimed_bases(out),
        )
        if not jobs and not problems:
            raise Sam3Error("No input images given.")
        check_names(jobs, cmd.stems)
        report = BatchReport(out, input_problems=problems, what=cmd.what)
        bar = progress_bar(len(jobs), progress)
        try:
            if dask_address or workers:
                _run_dask(cmd, jobs, out, report, bar, workers, dask_address, on_result, debug)
            else:
                _run_local(cmd, jobs, out, report, bar, on_result)
        except OSError as exc:
            report.fatal = describe_os_error(exc)
        finally:
            if bar is not None:
                bar.close()
        report.seconds = time.perf_counter() - t0
        try:
            cmd.assemble(out, report, argv)
        except OSError as exc:
            report.fatal = report.fatal or (
                describe_os_error(exc) + " The finished items are recorded in .done/; rerun the "
                "same command to write the run files."
            )
        except OutputError as exc:
            report.fatal = report.fatal or str(exc)
    return report


def _run_local(cmd, jobs, out, report, bar, on_result) -> None:
    def show(text: str) -> None:
        if bar is not None:
            bar.set_description_str(text[:60], refresh=True)

    for job in jobs:
        if take_results(report, run_file(job, cmd, str(out), show), bar, on_result):
            return


def _run_dask(cmd, jobs, out, report, bar, workers, address, on_result, debug) -> None:
    def failed(job: FileJob, exc: BaseException) -> list[ItemResult]:  # a worker died
        return [ItemResult(job.base, job.path, error=f"worker failed: {type(exc).__name__}: {exc}")]

    run_on_dask(
        run_file,
        jobs,
        (cmd, str(out.resolve())),
        {},
        workers=workers,
        address=address,
        debug=debug,
        key=f"napari-sam3-{cmd.what.split('(')[0]}",
        failed=failed,
        handle=lambda job, results: take_results(report, results, bar, on_result),
    )
