"""Run core progress generators in napari workers: progress, cancel, errors, one job at a time.

The core's long steps are generators that yield `core.progress.Progress` and return a result. Here such
a generator runs in a napari ``GeneratorWorker`` (a thread): every yield updates a
``napari.utils.progress`` bar (shown in the activity dock) and is a point where Cancel takes effect.

`JobRunner` keeps at most one job running. Submitting while one runs cancels it and queues the new
one (latest wins), so the engine is never driven from two threads at once and a stale result is never
delivered. Setting ``NAPARI_SAM3_SYNC=1`` runs jobs synchronously on the calling thread (debugging,
the stardist-napari pattern). The sessions in `_napari` take the runner's submit as a plain
callable; `EngineHolder` and the notification helpers live there (Qt-free) and are re-exported here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from napari_sam3._napari.engine_holder import EngineHolder
from napari_sam3._napari.notify import error_message, notify_error, notify_info, notify_warning
from napari_sam3.core.errors import Cancelled
from napari_sam3.core.progress import Progress

__all__ = [
    "EngineHolder",
    "Job",
    "JobRunner",
    "error_message",
    "next_turn",
    "notify_error",
    "notify_info",
    "notify_warning",
]


def _sync_mode() -> bool:
    return os.environ.get("NAPARI_SAM3_SYNC", "") not in ("", "0", "false", "False")


@dataclass
class Job:
    """One submitted run. ``make`` builds the generator (called in the worker's thread)."""

    make: Callable[[], Generator[Progress, None, Any]]
    desc: str
    group: str = "default"
    on_result: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    on_done: Callable[[str], None] | None = None  # "returned" | "errored" | "aborted"
    worker: Any = None
    pbar: Any = None
    state: str = "pending"  # pending | running | returned | errored | aborted
    started_at: float = field(default_factory=time.perf_counter)
    image: Any = None  # the image layer the run works on: removing it cancels the run
    owner: Any = None  # the tab that submitted it
    cancel_reason: str = ""  # why it was cancelled, when not by the Cancel button
    last_message: str | None = None  # its last progress line

    @property
    def done(self) -> bool:
        return self.state in ("returned", "errored", "aborted")


class JobRunner:
    """Serialises jobs: one runs on a napari worker thread, the others wait in submission order.

    Jobs carry a ``group`` ("text", "clicks", ...). A new job replaces a waiting job of its group; with
    ``replace_running=True`` it also cancels a running job of its group (Run pressed twice: the latest
    wins). A result is delivered only if no newer job of the same group is waiting.
    """

    def __init__(self, show_progress: bool = True) -> None:
        self.current: Job | None = None
        self.pending: list[Job] = []
        self.show_progress = show_progress
        self.listeners: list[
            Callable[[Job], None]
        ] = []  # called on the main thread per finished job
        self._closed = False

    # ----------------------------------------------------------------- public
    @property
    def busy(self) -> bool:
        return self.current is not None and not self.current.done

    @property
    def idle(self) -> bool:
        return not self.busy and not self.pending

    def submit(self, job: Job, replace_running: bool = True) -> Job:
        """Queue ``job``; start it now if nothing runs."""
        if self._closed:
            job.state = "aborted"
            return job
        for old in [j for j in self.pending if j.group == job.group]:
            old.state = "aborted"
            self.pending.remove(old)
        if self.busy:
            self.pending.append(job)
            if replace_running and self.current.group == job.group:
                self.cancel_current()
            return job
        self._start(job)
        return job

    def cancel_current(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self.current is not None and self.current.worker is not None and not self.current.done:
            self.current.worker.quit()

    def cancel(self, job: Job) -> None:
        """Stop ``job``: drop it if it waits, ask it to stop if it runs."""
        if job in self.pending:
            job.state = "aborted"
            self.pending.remove(job)
        elif job is self.current:
            self.cancel_current()

    def cancel_all(self) -> None:
        for job in self.pending:
            job.state = "aborted"
        self.pending = []
        self.cancel_current()

    def close(self) -> None:
        """Cancel everything; later results and submissions are dropped (widget closed)."""
        self._closed = True
        self.cancel_all()

    def wait(self, timeout: float = 30.0) -> bool:
        """Block (processing Qt events) until no job runs; True if idle in time. For tests/scripts."""
        from qtpy.QtWidgets import QApplication

        end = time.perf_counter() + timeout
        while not self.idle and time.perf_counter() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        return self.idle

    # ----------------------------------------------------------------- internals
    def _start(self, job: Job) -> None:
        self.current = job
        job.state = "running"
        job.started_at = time.perf_counter()
        if _sync_mode():
            self._run_sync(job)
            return
        from napari.qt.threading import create_worker

        if self.show_progress:
            from napari.utils import progress

            job.pbar = progress(total=0, desc=job.desc)
        worker = create_worker(
            _drive,
            job.make,
            _start_thread=False,
            _connect={"errored": lambda exc, j=job: self._on_error(j, exc)},
        )
        job.worker = worker
        worker.yielded.connect(lambda p, j=job: self._on_yield(j, p))
        worker.returned.connect(lambda r, j=job: self._on_returned(j, r))
        worker.aborted.connect(lambda j=job: self._set_state(j, "aborted"))
        worker.finished.connect(lambda j=job: self._on_finished(j))
        worker.start()

    def _run_sync(self, job: Job) -> None:
        gen = job.make()
        try:
            while True:
                self._on_yield(job, next(gen))
        except StopIteration as stop:
            self._on_returned(job, stop.value)
        except Exception as exc:  # noqa: BLE001 - routed to the job's handler
            self._on_error(job, exc)
        self._on_finished(job)

    def _on_yield(self, job: Job, report: Any) -> None:
        if not isinstance(report, Progress) or job.done:
            return
        if job.worker is not None and job.worker.abort_requested:
            return  # reports queued before a cancel would overwrite "Cancelled."
        # Tell the caller first: updating napari's progress bar can process Qt events, so the
        # job's result or error may be handled inside that update (re-entrantly).
        if job.on_progress is not None and not self._closed:
            job.on_progress(report)
        pbar = job.pbar
        if pbar is None or job.done:
            return
        try:
            if report.total and pbar.total != report.total:
                pbar.total = int(report.total)
            if report.total:
                delta = int(report.step) - int(pbar.n)
                if delta:
                    pbar.update(delta)
            pbar.set_description(report.message)
        except Exception:  # noqa: BLE001 - progress display must never break a run
            pass

    def _on_returned(self, job: Job, result: Any) -> None:
        self._set_state(job, "returned")
        superseded = any(j.group == job.group for j in self.pending)
        if job.on_result is not None and not self._closed and not superseded:
            job.on_result(result)

    def _on_error(self, job: Job, exc: BaseException) -> None:
        self._set_state(job, "aborted" if isinstance(exc, Cancelled) else "errored")
        if job.on_error is not None and not self._closed:
            job.on_error(exc)

    def _set_state(self, job: Job, state: str) -> None:
        if not job.done:
            job.state = state

    def _on_finished(self, job: Job) -> None:
        if not job.done:  # finished without returned/errored: aborted
            job.state = "aborted"
        if job.pbar is not None:
            try:
                job.pbar.close()
            except Exception:  # noqa: BLE001
                pass
            job.pbar = None
        if job.on_done is not None and not self._closed:
            job.on_done(job.state)
        for listener in list(self.listeners) if not self._closed else ():
            try:
                listener(job)
            except Exception:  # noqa: BLE001 - a listener must not stop the queue
                pass
        if self.current is job:
            self.current = None
        if self.current is None and self.pending and not self._closed:
            self._start(self.pending.pop(0))


def _drive(make: Callable[[], Generator[Progress, None, Any]]):
    """The worker's generator: builds the core generator in the worker thread and relays it."""
    result = yield from make()
    return result


def next_turn(step: Callable[[], None]) -> None:
    """Run ``step`` on the next turn of the Qt event loop (the Qt-free layer adder's scheduler)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, step)
