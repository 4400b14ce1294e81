"""How long does the napari main thread stall while SAM3 runs? (goal: < 50 ms)

A 1 ms precise QTimer records every event-loop tick; the longest gap between ticks during a run is
the longest time the window could not repaint or react. Each run goes through the real widget
(worker thread, progress bar, result layer), so the number includes the main-thread work: building
the Labels layer, its features table and the re-filter on slider moves.

It also answers whether micro-sam's slowdown of model work inside napari workers (micro-sam issue
740, napari >= 0.5) bites us: the same image encode is timed inside the worker (with the 1 ms timer
ticking) and synchronously on the main thread with no event loop running.

Run (needs a display; GUI-less machines: xvfb)::

    HF_HUB_OFFLINE=1 xvfb-run -a python benchmarks/bench_stall.py            # tiny model (seconds)
    HF_HUB_OFFLINE=1 xvfb-run -a python benchmarks/bench_stall.py --full     # full-size SAM3,
        # random weights, fp32 (speed does not depend on weight values); ~5 GiB RAM, minutes on CPU
    add --ab 3 for interleaved worker / main-thread timings, --diagnose for the stalled stacks,
    --layer-ab N for N interleaved result-layer adds (add_labels on the main thread vs built in a
    thread + append), --gc-freeze for the what-if without full garbage-collection pauses.

Each step reports max_gap_model_work_ms (before the result reaches the main thread) and
max_gap_result_to_screen_ms (layer add + first draw), p99_gap_ms, and full (generation-2) garbage
collections inside the step (they stop every thread, so they count wherever they ran).

Tiny model, 1024 px, 2026-11-28, load average 3-4.5 on 2 cores, three interleaved runs each of the
code before (HEAD) / after building result layers in the worker, one napari layer add per event-loop
turn and skipping unchanged placement sets (max gap per run, ms):
- model work: 22-75 / 18-65; text result to screen: 148-268 / 114-244; click (preview update):
  71-142 / 41-61; count (Labels + Points): 240-282 / 200-296; slider: 28-58 / 27-45.
- napari's append of a Labels layer is ~100 ms on an idle machine (vispy visual + shaders 33-52,
  layer overlays 43-58, Qt layer controls 16-25, selection switch 12-16) plus a first draw of
  50-135 ms (software OpenGL): not reducible from the plugin. A full garbage collection (~715k
  tracked objects once the model is loaded) takes 200-550 ms and once made a 791 ms gap; gc.freeze()
  would avoid it but leaks every layer removed later, so the plugin does not use it.

Measured 2026-11-28, napari 0.9.2, PyQt6, 2 CPU cores shared with other jobs (load average 5-9, so
seconds are inflated), full-size model, 1024 px image:
- while the model computes, p99 gap 18-40 ms; the largest stalls (130-480 ms) are napari adding a
  new layer (vispy visual, shaders, layer controls): adding an EMPTY Labels layer alone stalled
  585 ms in the same run. Threshold slider (re-filter in a worker, debounced): max 46 ms.
- micro-sam's worker slowdown does not show: detector on cached features, worker with an idle event
  loop 17.8 / 8.2 / 10.2 s vs main thread 18.5 / 8.7 / 13.0 s (interleaved). A busy main thread
  does slow the worker on 2 cores: with the 1 ms probe timer 19.3 / 12.9 / 16.3 s, and with a
  processEvents() polling loop the image encode took 165 s in the worker vs 120 s direct.
  torch sees the same thread count inside the worker (2) as on the main thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402  (before Qt: pytorch issue 11326)


def full_size_engine(device: str = "cpu"):
    """A Sam3Engine on the full-size SAM3 architecture with random weights (no download)."""
    from pathlib import Path

    from transformers import (
        CLIPTokenizer,
        Sam3ImageProcessor,
        Sam3Processor,
        Sam3VideoConfig,
        Sam3VideoModel,
    )

    from napari_sam3.core.sam3.engine import Sam3Engine
    from napari_sam3.core.sam3.loading import LoadedModel
    from napari_sam3.testing import tiny_vocab

    torch.manual_seed(0)
    model = Sam3VideoModel(Sam3VideoConfig()).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(),
        tokenizer=CLIPTokenizer(vocab=tiny_vocab(), merges=[]),
    )
    loaded = LoadedModel(
        model, processor, "random-full-size", Path("."), torch.device(device), torch.float32
    )
    return Sam3Engine(loaded)


class StallSampler:
    """A watchdog thread: while the main thread has not ticked for > 50 ms, sample its stack."""

    def __init__(self, recorder):
        import threading

        self.recorder = recorder
        self.main_id = threading.main_thread().ident
        self.samples: dict[str, int] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import traceback

        while not self._stop.wait(0.01):
            ticks = self.recorder.ticks
            if not ticks or not self.recorder.timer_active:
                continue
            if time.perf_counter() - ticks[-1] > 0.05:
                frame = sys._current_frames().get(self.main_id)
                if frame is None:
                    continue
                stack = traceback.extract_stack(frame)[-12:]
                key = " <- ".join(
                    f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(stack)
                )
                self.samples[key] = self.samples.get(key, 0) + 1

    def report(self, top=8):
        items = sorted(self.samples.items(), key=lambda kv: -kv[1])[:top]
        self.samples = {}
        return [f"{n * 10} ms: {k}" for k, n in items]


class TickRecorder:
    """Timestamps of a 1 ms precise QTimer on the main thread."""

    timer_active = False

    def __init__(self):
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(1)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self):
        self.ticks = [time.perf_counter()]
        self.timer.start()
        self.timer_active = True

    def stop(self, result_at: float | None = None, gc_pauses=()) -> dict:
        """Gap statistics; with ``result_at`` (when the main thread got the run's result) the gaps
        are split into "model work" (before) and "result to screen" (layer add, first draw)."""
        self.timer_active = False
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        ticks = np.asarray(self.ticks)
        gaps = np.diff(ticks) * 1000.0
        row = {
            "max_stall_ms": round(float(gaps.max()), 1),
            "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
            "gaps_over_50ms": int((gaps > 50).sum()),
            "ticks": len(gaps),
        }
        if result_at is not None:
            before = ticks[1:] <= result_at  # gap ended before the result arrived
            row["max_gap_model_work_ms"] = round(float(gaps[before].max(initial=0.0)), 1)
            row["max_gap_result_to_screen_ms"] = round(float(gaps[~before].max(initial=0.0)), 1)
        # Full (generation 2) collections stop every thread (GIL): a pause counts wherever it ran.
        inside = [d for t, d, gen in gc_pauses if ticks[0] <= t <= ticks[-1] and gen == 2]
        row["gc_full_collections"] = len(inside)
        row["gc_full_max_ms"] = round(max(inside, default=0.0), 1)
        return row


def _pump_until(predicate, timeout=3600.0):
    """Run a real Qt event loop (as napari does: it sleeps until an event) until ``predicate``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    end = time.perf_counter() + timeout
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: (predicate() or time.perf_counter() > end) and loop.quit())
    check.start()
    if not (predicate() or time.perf_counter() > end):
        loop.exec()
    check.stop()


class GcPauses:
    """Every garbage collection's (start, duration ms, generation), from ``gc.callbacks``."""

    def __init__(self):
        import gc

        self.pauses: list[tuple[float, float, int]] = []
        self._t = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((self._t, (time.perf_counter() - self._t) * 1e3, info["generation"]))


class ResultMarks:
    """When the main thread starts handling each finished job's result (the layer work)."""

    def __init__(self, *runners):
        self.times: list[float] = []
        for runner in runners:
            orig = runner._on_returned
            runner._on_returned = lambda job, r, orig=orig: (
                self.times.append(time.perf_counter()),
                orig(job, r),
            )[-1]

    def first_after(self, t0: float) -> float | None:
        return next((t for t in self.times if t >= t0), None)


GC = GcPauses()
MARKS: ResultMarks | None = None


def measure(label, action, widget, rec, results, sampler=None):
    rec.start()
    t0 = time.perf_counter()
    action()
    _pump_until(lambda: widget.idle)
    _pump_until(lambda: False, timeout=0.2)  # let the result layer draw
    wall = time.perf_counter() - t0 - 0.2
    result_at = MARKS.first_after(t0) if MARKS is not None else None
    if label.startswith(("napari alone", "layer add")):
        result_at = t0  # all of it is the layer add
    row = {"step": label, "wall_s": round(wall, 2), **rec.stop(result_at, GC.pauses)}
    if sampler is not None:
        row["main_thread_while_stalled"] = sampler.report()
    results.append(row)
    print(json.dumps(row), flush=True)
    return row


def layer_add_ab(viewer, tab, widget, rec, results, rounds: int) -> None:
    """Interleaved: the last text result added as before (``viewer.add_labels`` on the main thread)
    vs built in a thread and only appended on the main thread (what the widget does now)."""
    import threading

    from napari.layers import Labels

    from napari_sam3._napari import layers as L

    res = tab.last_text
    if res is None or rounds <= 0:
        return
    prepared = L.prepare_filtered(res.raw, res.ref, "ab", tab.filter_settings())
    data, kwargs = prepared.data, prepared.kwargs
    for r in range(rounds):
        for how in ("add_labels on main thread (before)", "built in thread + append (now)"):
            kw = {**kwargs, "name": f"ab {r} {how[:5]}"}
            if how.startswith("add_labels"):
                step = lambda kw=kw: viewer.add_labels(data, **kw)  # noqa: E731
            else:
                built = []
                worker = threading.Thread(
                    target=lambda b=built, kw=kw: b.append(Labels(data, **kw))
                )
                worker.start()
                worker.join()  # the widget builds it inside the run's worker
                step = lambda b=built: viewer.layers.append(b[0])  # noqa: E731
            row = measure(f"layer add A/B: {how}", step, widget, rec, results, None)
            row["round"] = r
    for ly in [ly for ly in viewer.layers if ly.name.startswith("ab ")]:
        viewer.layers.remove(ly)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full-size SAM3 (random weights)")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--direct-encode",
        action="store_true",
        help="also time one image encode on the main thread (slow with --full)",
    )
    ap.add_argument(
        "--ab",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="interleaved worker/main-thread timing rounds of the detector",
    )
    ap.add_argument(
        "--diagnose", action="store_true", help="sample the main thread's stack in stalls"
    )
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="what-if: gc.freeze() after start-up, so full collections skip the ~400k start-up "
        "objects (not done by the plugin: layers removed later would never be freed)",
    )
    ap.add_argument(
        "--layer-ab", type=int, default=3, metavar="ROUNDS", help="layer-add A/B rounds"
    )
    args = ap.parse_args(argv)

    import napari

    from napari_sam3._widget import Sam3Widget
    from napari_sam3.core.synthetic import synthetic_nuclei

    if args.full:
        t = time.perf_counter()
        engine = full_size_engine(args.device)
        print(f"built full-size model in {time.perf_counter() - t:.1f} s", flush=True)
    else:
        from napari_sam3.core.sam3.engine import Sam3Engine
        from napari_sam3.testing import tiny_checkpoint_dir

        engine = Sam3Engine.load(str(tiny_checkpoint_dir()), device=args.device)

    image, _ = synthetic_nuclei((args.size, args.size), seed=0)
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="nuclei")
    widget = Sam3Widget(viewer, engine_loader=lambda source, device: engine)
    viewer.window.add_dock_widget(widget, name="SAM3")
    tab = widget.segment_tab
    tab.threshold_slider.setValue(10)
    global MARKS
    MARKS = ResultMarks(widget.runner, tab.post_runner)
    if args.gc_freeze:  # what-if only: the plugin does NOT do this (frozen layers would leak)
        import gc

        gc.collect()
        gc.freeze()
    rec = TickRecorder()
    sampler = StallSampler(rec) if args.diagnose else None
    results: list[dict] = []
    _pump_until(lambda: False, timeout=1.0)

    def baseline():
        viewer.add_labels(np.zeros((args.size, args.size), np.uint16), name="baseline")

    measure("napari alone: add an empty Labels layer", baseline, widget, rec, results, sampler)
    viewer.layers.remove("baseline")
    tab.concepts_edit.setText("nucleus")
    measure("text, cold (encode + detect)", tab.run_text, widget, rec, results, sampler)
    worker_encode = engine.last_encode_seconds
    results[-1]["candidates"] = len(tab.last_text.raw)
    worker_prompt = []
    for concept in ("cell", "blob"):
        tab.concepts_edit.setText(concept)
        measure(f"text '{concept}', cached image", tab.run_text, widget, rec, results, sampler)
        results[-1]["candidates"] = len(tab.last_text.raw)
        worker_prompt.append(engine.last_prompt_seconds)

    def slider():
        for v in (20, 30, 15, 10):
            tab.threshold_slider.setValue(v)

    measure("threshold slider x4 (main thread)", slider, widget, rec, results, sampler)
    clicks, _ = tab.add_prompt_layers()
    _pump_until(lambda: False, timeout=1.0)  # first draw of the new prompt layers
    measure(
        "click (tracker)",
        lambda: clicks.add([args.size // 2, args.size // 2]),
        widget,
        rec,
        results,
        sampler,
    )

    count = widget.count_tab
    count.method_combo.setCurrentText("classical")
    measure(
        "count (classical): Labels + Points layers", count.run_count, widget, rec, results, sampler
    )
    layer_add_ab(viewer, tab, widget, rec, results, args.layer_ab)
    # The same work synchronously on the main thread (no event loop, no worker).
    plane = np.asarray(image)
    direct_prompt = []
    for concept in ("dot", "spot"):
        engine.segment_text(plane, concept)
        direct_prompt.append(engine.last_prompt_seconds)
    # Interleaved A/B of the same detector work: worker + 1 ms ticks, worker with an idle event loop,
    # and synchronous on the main thread. Interleaving spreads any outside load over all three.
    ab = {"worker_with_1ms_ticks": [], "worker_idle_loop": [], "main_thread_direct": []}
    for r in range(args.ab):
        for cond in ab:
            concept = f"thing{r}{cond[:3]}"
            if cond == "main_thread_direct":
                engine.segment_text(plane, concept)
            else:
                tab.concepts_edit.setText(concept)
                if cond == "worker_with_1ms_ticks":
                    rec.start()
                tab.run_text()
                _pump_until(lambda: widget.idle)
                if cond == "worker_with_1ms_ticks":
                    rec.stop()
            ab[cond].append(round(engine.last_prompt_seconds, 2))
            print(json.dumps({"ab": cond, "round": r, "prompt_s": ab[cond][-1]}), flush=True)
    # Does torch see fewer threads inside a napari worker (one suspected cause of slow workers)?
    from napari_sam3._qt.worker import Job

    seen = []

    def threads_job():
        seen.append(torch.get_num_threads())
        return None
        yield  # a generator, like every job

    widget.runner.submit(Job(make=threads_job, desc="threads"))
    _pump_until(lambda: widget.idle)
    direct = None
    if args.direct_encode:
        engine.clear_cache()
        t = time.perf_counter()
        engine.encode(plane)
        direct = time.perf_counter() - t
    summary = {
        "model": "full-size SAM3, random weights, fp32" if args.full else "tiny test model",
        "device": args.device,
        "image": f"{args.size}x{args.size}",
        "torch_threads": torch.get_num_threads(),
        "napari": napari.__version__,
        "encode_in_worker_s": None if worker_encode is None else round(worker_encode, 2),
        "encode_direct_main_thread_s": None if direct is None else round(direct, 2),
        "prompt_in_worker_s": [round(x, 2) for x in worker_prompt],
        "prompt_direct_main_thread_s": [round(x, 2) for x in direct_prompt],
        "load_average": os.getloadavg(),
        "ab_prompt_seconds": ab,
        "torch_threads_in_worker": seen[0] if seen else None,
        "gc_tracked_objects": len(__import__("gc").get_objects()),
        "max_stall_ms_overall": max(r["max_stall_ms"] for r in results),
        "max_gap_model_work_ms": max(r.get("max_gap_model_work_ms", 0) for r in results),
        "max_gap_result_to_screen_ms": max(
            r.get("max_gap_result_to_screen_ms", 0) for r in results
        ),
        "gc_full_max_ms": max(r["gc_full_max_ms"] for r in results),
        "steps": results,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    widget.cleanup()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
