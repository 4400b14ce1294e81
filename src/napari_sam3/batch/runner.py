"""Planning and plumbing of a run (the loop itself is `batch.loop`): jobs, names, report, Dask.

* `plan_jobs`: one `FileJob` per input file, with a unique output base (``<parent>_<stem>`` on a
  clash, in this run or with a file the output folder's records already name); a file keeps the
  name an earlier run gave it; our own outputs are never inputs.
* `check_names`: every output name of the run (plane and stack names included: ``a.tif`` with two
  planes gives ``a_z000`` and ``a_z001``) is unique, also ignoring case, before any work starts.
* `check_run_files`: run-level files (``counts.csv``, ``manifest.json``, ...) already in the output
  folder are replaced only when an earlier run of ours wrote them (the manifest holds their
  digests) and nobody changed them since; anything else needs ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_sam3.core.errors import Sam3Error
from napari_sam3.io.atomic import file_digest
from napari_sam3.io.readers import expand_inputs, file_base

OUTPUT_SUFFIXES = ("_labels.tif", "_labels.png", "_tracks.tif")


@dataclass(frozen=True)
class FileJob:
    path: str  # absolute path of the input file
    base: str  # output base name (file stem, made unique in the run)


@dataclass
class BatchReport:
    """What happened: one `loop.ItemResult` per plane / stack, plus input problems."""

    out_dir: Path
    results: list = field(default_factory=list)
    input_problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    fatal: str | None = None  # the run stopped: model not loadable, output folder not writable
    what: str = "plane(s)"

    @property
    def failures(self) -> list[dict]:
        fails = [r.as_dict() for r in self.results if r.status == "failed"]
        return fails + [
            {"stem": "", "source": i, "status": "failed", "error": why}
            for i, why in self.input_problems
        ]

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.fatal:
            return 2
        return 1 if self.failures else 0


def plan_jobs(
    inputs: Iterable[str],
    exclude_dir: Path | None = None,
    suffixes: tuple[str, ...] = (),
    claims: Iterable[dict] = (),
) -> tuple[list[FileJob], list[tuple[str, str]]]:
    """Expand inputs; give each file a unique output base (``<parent>_<stem>`` on a clash).

    Our own outputs in ``exclude_dir`` (the output folder) are left out: outputs are never inputs.
    ``claims`` (`records.claimed_bases` of the output folder): a file keeps the name an earlier run
    gave it (a subset rerun names it as the full run did), and no file gets a name the folder's
    records give to another file (the same name from another folder becomes ``<parent>_<stem>``).
    """
    files, problems = expand_inputs(inputs)
    if exclude_dir is not None:
        ex = exclude_dir.resolve()
        ends = OUTPUT_SUFFIXES + tuple(suffixes)
        files = [f for f in files if not _is_output(f, ex, ends)]
    claims = list(claims)
    owned = {os.path.realpath(c["source"]): c["base"] for c in claims}
    taken: dict[str, list[dict]] = defaultdict(list)
    for c in claims:
        taken[c["base"].casefold()].append(c)
    bases = [file_base(f) for f in files]
    clash = {b for b, n in Counter(b.casefold() for b in bases).items() if n > 1}
    named = [
        f"{f.parent.name}_{b}" if b.casefold() in clash else b
        for f, b in zip(files, bases, strict=True)
    ]
    chosen: list[str | None] = [owned.get(os.path.realpath(f)) for f in files]
    used: set[str] = set()
    for i, base in enumerate(chosen):  # names this folder already gave these files come first
        if base is not None and base.casefold() not in used:
            used.add(base.casefold())
        else:
            chosen[i] = None
    jobs = []
    for f, b, base in zip(files, named, chosen, strict=True):
        if base is None:
            base = _free_name(f, b, used, taken)
            used.add(base.casefold())
        jobs.append(FileJob(str(f), base))
    return jobs, problems


def _free_name(f: Path, natural: str, used: set[str], taken: dict[str, list[dict]]) -> str:
    """The first of ``natural``, ``<parent>_<stem>``, ``<parent>_<stem>_2``... not used in this run
    and not given by the folder's records to another file."""
    from napari_sam3.batch.records import same_source, source_signature

    def free(name: str) -> bool:
        if name.casefold() in used:
            return False
        for c in taken.get(name.casefold(), ()):
            sig = c.get("source_file") or {}
            try:  # the same image moved elsewhere keeps its name (hashed only on a size match)
                if sig.get("size") == f.stat().st_size and same_source(sig, source_signature(f)):
                    continue
            except OSError:
                pass
            return False
        return True

    parent = f"{f.parent.name}_{file_base(f)}"
    for name in (natural, parent):
        if free(name):
            return name
    n = 2
    while not free(f"{parent}_{n}"):
        n += 1
    return f"{parent}_{n}"


def _is_output(f: Path, out: Path, ends: tuple[str, ...]) -> bool:
    if f.parent == out:
        return f.name.endswith(ends)
    return (out / "pairs") in f.parents


def check_names(jobs: list[FileJob], stems_of: Callable[[FileJob], list[str]]) -> None:
    """`Sam3Error` naming every output name two inputs would share (case ignored)."""
    owners: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for job in jobs:
        for stem in stems_of(job):
            owners[stem.casefold()].append((stem, job.path))
    clashes = {k: v for k, v in owners.items() if len(v) > 1}
    if not clashes:
        return
    lines = [
        f"'{v[0][0]}' from " + " and ".join(Path(p).name for _, p in v)
        for v in list(clashes.values())[:5]
    ]
    more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
    raise Sam3Error(
        "output names would collide: " + "; ".join(lines) + more + ". Rename one of the files, "
        "or process them into different --out folders. Nothing was written."
    )


def run_file_digests(out: Path, names: Iterable[str]) -> dict[str, dict]:
    """Size and SHA-256 of each run-level file that exists (stored in the run manifest)."""
    return {n: file_digest(out / n) for n in names if (out / n).is_file()}


def check_run_files(out: Path, cmd) -> None:
    """Refuse run-level files in ``out`` that are not ours, or changed since (unless overwrite)."""
    if cmd.overwrite:
        return
    names = cmd.run_files()
    present = [n for n in names if (out / n).exists()]
    if not present:
        return
    man = out / cmd.manifest
    try:
        doc = json.loads(man.read_text(encoding="utf-8")) if man.exists() else None
    except (OSError, ValueError):
        doc = None
    ours = isinstance(doc, dict) and doc.get("tool") == cmd.tool
    known = doc.get("run_files") if ours else None
    foreign = []
    for n in present:
        if not ours:
            foreign.append(n)
        elif isinstance(known, dict) and n != cmd.manifest:
            want = known.get(n)
            try:
                if want is None or file_digest(out / n) != want:
                    foreign.append(n)
            except OSError:
                foreign.append(n)
    if not ours and cmd.manifest in present and man.exists():
        first = f"{man} exists and was not written by napari-sam3"
    elif foreign:
        first = "these files are not the ones this folder's runs wrote (yours, or edited since)"
    else:
        return
    raise Sam3Error(
        f"{first}: {', '.join(foreign)}; move them, use --overwrite to replace them, or choose "
        "another --out. Nothing was written."
    )


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over files on stderr (None when disabled)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="napari-sam3", file=sys.stderr, dynamic_ncols=True)


def take_results(report: BatchReport, results: list, bar, on_result=None) -> bool:
    """Add one file's results to the report; True when the run must stop (a fatal result)."""
    fatal = [r for r in results if r.status == "fatal"]
    report.results.extend(r for r in results if r.status != "fatal")
    if fatal:
        report.fatal = fatal[0].error
        return True
    if bar is not None:
        c = report.counts
        bar.set_postfix(done=c["done"], skipped=c["skipped"], failed=c["failed"], refresh=False)
        bar.update(1)
    if on_result:
        for r in results:
            on_result(r)
    return False


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
