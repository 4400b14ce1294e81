"""JobRunner: progress, results, errors, cancel and latest-wins, on real napari workers."""

import threading
import time

import pytest

from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, error_message
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress

pytestmark = pytest.mark.gui  # napari workers need a QApplication (a display: xvfb-run -a)


def _gen(n=3, delay=0.0, result="done", gate: threading.Event | None = None, fail=None):
    def make():
        for i in range(n):
            if gate is not None:
                gate.wait(5)
            if delay:
                time.sleep(delay)
            yield Progress(f"step {i}", i + 1, n)
        if fail is not None:
            raise fail
        return result

    return make


def _job(make, group="g", **kw):
    out = {"results": [], "errors": [], "progress": [], "done": []}
    job = Job(
        make=make,
        desc="test",
        group=group,
        on_result=out["results"].append,
        on_error=out["errors"].append,
        on_progress=out["progress"].append,
        on_done=out["done"].append,
        **kw,
    )
    return job, out


def test_result_and_progress(qtbot):
    runner = JobRunner()
    job, out = _job(_gen(3, result=42))
    runner.submit(job)
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert out["results"] == [42]
    assert [p.step for p in out["progress"]] == [1, 2, 3]
    assert out["done"] == ["returned"] and job.state == "returned"
    assert job.pbar is None  # progress bar closed


def test_error_is_routed_not_raised(qtbot):
    runner = JobRunner()
    job, out = _job(_gen(1, fail=Sam3Error("do this to fix it")))
    runner.submit(job)
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert job.state == "errored" and out["results"] == []
    assert error_message(out["errors"][0]) == "do this to fix it"
    assert "ValueError" in error_message(ValueError("x"))


def test_cancel_stops_at_next_yield(qtbot):
    runner = JobRunner()
    gate = threading.Event()
    job, out = _job(_gen(50, gate=gate))
    runner.submit(job)
    runner.cancel_all()
    gate.set()
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert job.state == "aborted" and out["results"] == []
    assert len(out["progress"]) < 50


def test_latest_wins_and_groups_queue(qtbot):
    runner = JobRunner()
    gate = threading.Event()
    first, out1 = _job(_gen(20, gate=gate, result=1), group="text")
    second, out2 = _job(_gen(2, result=2), group="text")
    click, out3 = _job(_gen(1, result=3), group="clicks")
    runner.submit(first)
    runner.submit(click, replace_running=True)  # other group: waits, does not cancel
    runner.submit(second, replace_running=True)  # same group: cancels the first
    gate.set()
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert first.state == "aborted" and out1["results"] == []
    assert out2["results"] == [2] and out3["results"] == [3]


def test_close_drops_everything(qtbot):
    runner = JobRunner()
    gate = threading.Event()
    job, out = _job(_gen(5, gate=gate))
    runner.submit(job)
    runner.close()
    gate.set()
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert out["results"] == [] and out["done"] == []
    late, _ = _job(_gen(1))
    assert runner.submit(late).state == "aborted"


def test_sync_mode(monkeypatch):
    monkeypatch.setenv("NAPARI_SAM3_SYNC", "1")
    runner = JobRunner(show_progress=False)
    job, out = _job(_gen(2, result="sync"))
    runner.submit(job)
    assert out["results"] == ["sync"] and runner.idle


def test_engine_holder_loads_once_in_worker(qtbot):
    calls = []

    def loader(source, device):
        calls.append((source, device, threading.current_thread() is threading.main_thread()))
        return object()

    holder = EngineHolder(loader)
    runner = JobRunner()
    results = []
    for _ in range(2):
        runner.submit(
            Job(make=lambda: holder.iter_engine("m", "cpu"), desc="load", on_result=results.append),
            replace_running=False,
        )
        qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert len(calls) == 1 and calls[0][2] is False  # loaded once, off the main thread
    assert results[0] is results[1] is holder.engine
    assert holder.is_loaded("m", "cpu") and not holder.is_loaded("m", "cuda")


@pytest.mark.parametrize("exc", [Sam3Error("gated: run `hf auth login`")])
def test_engine_holder_load_error(qtbot, exc):
    def loader(source, device):
        raise exc

    holder = EngineHolder(loader)
    runner = JobRunner()
    job, out = _job(lambda: holder.iter_engine("m", "cpu"))
    runner.submit(job)
    qtbot.waitUntil(lambda: runner.idle, timeout=10_000)
    assert out["errors"] == [exc] and holder.engine is None
