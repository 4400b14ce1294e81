"""The Segment tab's run state and steps, without Qt: text / exemplar runs, re-filter, clicks,
tracking, propagating clicked objects, and exemplars drawn on one image used on another.

`SegmentSession` holds what a run leaves behind (the last text result and the layer its re-filter
controls drive; through `ClickSession` the click candidates, the preview and the commit target) and
the steps that make and use it. It takes plain values (concept text, `FilterSettings`, the image and
plane, the model source) and never reads a widget. Jobs go through the ``submit`` callables it is
given (the Qt shell's `JobRunner`; a synchronous driver in tests), with the signature
``submit(make, desc, group, on_result, status=None)``. It reports back through ``events``:
``status`` (a line for the user), ``result`` (the driven layer changed; ``from_model`` says whether
a model run, not a re-filter, produced it) and ``adapted`` (an adaptation finished).

Everything a run needs is captured when it starts (image layer object, plane, geometry), so a result
lands where the user asked even if the view moved, and is dropped with a notification if the image
was removed or changed shape.
"""

from __future__ import annotations

import numpy as np
from napari.utils.events import EmitterGroup

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari import propagation as PR
from napari_sam3._napari import text_result as R
from napari_sam3._napari import track_result as T
from napari_sam3._napari.click_session import ClickSession, prompt_layers
from napari_sam3._napari.notify import notify_info
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.text_result import TextResult
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import concepts_typed
from napari_sam3.core.results.review import with_status


class SegmentSession:
    """Text / exemplar / click / box / tracking runs on one viewer and what they leave behind.

    ``submit`` runs model jobs; ``submit_quick`` runs re-filters (no model: they never wait behind
    a model run); ``later(step)`` runs ``step`` on a later event-loop turn (`layer_builder.LayerAdder`).
    """

    def __init__(self, viewer, holder, submit, submit_quick, later) -> None:
        self.viewer = viewer
        self.holder = holder
        self._submit = submit
        self._submit_quick = submit_quick
        self.adder = B.LayerAdder(viewer, later)  # result layers: one napari layer add per turn
        self.last_text: TextResult | None = None
        self.last_adapt = None  # the last `core.sam3.adapt.AdaptResult`
        self.events = EmitterGroup(source=self, status=None, result=None, adapted=None)
        self.clicks = ClickSession(viewer, holder, submit, self.say, self.image_still_valid)

    def say(self, text: str) -> None:
        self.events.status(value=text)

    def close(self) -> None:
        self.adder.close()

    def image_still_valid(self, image, ref: L.PlaneRef) -> bool:
        """Whether a finished run's image is still in the viewer with the shape it ran on."""
        if image not in self.viewer.layers:
            text = f"The image '{ref.layer_name}' was removed during the run; result dropped."
            self.say(text)
            notify_info(text)
            return False
        try:
            shape = tuple(L.level0(image.data).shape)
        except Exception:  # noqa: BLE001
            return False
        shape = shape[:-1] if image.rgb else shape
        if shape[-2:] != tuple(ref.shape) or len(shape) != ref.ndim:
            notify_info(
                f"The image '{ref.layer_name}' changed shape during the run; result dropped."
            )
            return False
        return True

    # ------------------------------------------------------------------ text / exemplars
    def run_text(self, run: PlaneRun, concepts_text: str, exemplars: bool, settings):
        """Concepts (and, if ``exemplars``, the boxes of the plane as exemplars) -> a Labels layer.

        With no concept and no box: in box-prompt mode the clicks run instead; in exemplar mode a
        `Sam3Error` says what to type. Returns the submitted job (or None).
        """
        image, ref, pre = run.image, run.ref, run.preprocessing
        concepts = concepts_typed(concepts_text)  # Sam3Error for e.g. digits only
        boxes, box_labels = self._boxes(image if exemplars else None, ref)
        if not concepts and len(boxes) == 0:
            if not exemplars:
                return self.clicks.run_clicks(image, ref, True, pre, run.model)
            raise Sam3Error("Type a concept (e.g. 'nucleus') or draw an exemplar box.")
        data = image.data
        prompt_text = ", ".join(concepts) if concepts else "exemplars"

        def iter_raw(engine):
            yield Progress("Reading the image plane...")
            plane = L.read_plane(data, ref)
            if len(boxes):
                text = ", ".join(concepts) if concepts else None
                return (
                    yield from engine.iter_exemplars(
                        plane, boxes, box_labels, text=text, preprocessing=pre, rgb=ref.rgb
                    )
                )
            return (yield from engine.iter_text(plane, concepts, preprocessing=pre, rgb=ref.rgb))

        status = f"Running '{prompt_text}' on {ref.layer_name}{ref.slice_text()}..."
        return self._submit_result(run, run, iter_raw, prompt_text, settings, "text", status)

    def run_exemplar_transfer(self, run: PlaneRun, target: PlaneRun, concepts_text: str, settings):
        """The exemplar boxes on ``run`` 's plane, encoded there, search ``target`` 's plane.

        The result is a Segment result like a text run's (re-filterable, `TextResult`), whose
        objects carry a review ``status`` from the start (as propagated objects do). Returns the
        submitted job; raises `Sam3Error` (what to fix) when there is no box or the concept text
        is unusable.
        """
        image, ref = run.image, run.ref
        boxes, box_labels = self._boxes(image, ref)
        if not len(boxes):
            raise Sam3Error(
                f"Draw exemplar boxes on '{ref.layer_name}' (on the slice shown) first."
            )
        text = ", ".join(concepts_typed(concepts_text)) or None
        data, target_data = image.data, target.image.data

        def iter_raw(engine):
            yield Progress("Reading the planes...")
            prompt = yield from engine.iter_exemplar_prompt(
                L.read_plane(data, ref),
                boxes,
                box_labels,
                text,
                preprocessing=run.preprocessing,
                rgb=ref.rgb,
            )
            return (
                yield from engine.iter_segment_with(
                    L.read_plane(target_data, target.ref),
                    prompt,
                    preprocessing=target.preprocessing,
                    rgb=target.ref.rgb,
                )
            )

        prompt_text = f"exemplars from {ref.layer_name}"
        status = f"Searching {target.ref.layer_name} with the exemplars of {ref.layer_name}..."
        return self._submit_result(
            run, target, iter_raw, prompt_text, settings, "exemplar-transfer", status, review=True
        )

    def _boxes(self, image, ref: L.PlaneRef) -> tuple[np.ndarray, np.ndarray]:
        """The boxes (xyxy) and their labels on ``image`` 's boxes layer in ``ref`` 's plane."""
        _, box_layer = prompt_layers(self.viewer, image) if image is not None else (None, None)
        if box_layer is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        return L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)

    def _submit_result(
        self, run, target: PlaneRun, iter_raw, prompt_text, settings, group, status, review=False
    ):
        """Submit a model run on ``run`` 's model whose candidates ``iter_raw(engine)`` finds on
        ``target`` 's plane; the result becomes the re-filter controls' `TextResult`."""
        holder = self.holder
        source, device = run.model

        def make():
            engine = yield from holder.iter_engine(source, device)
            raw = yield from iter_raw(engine)
            yield Progress(f"Building the label image ({len(raw)} candidates)...")
            res = TextResult(raw, target.ref, target.image, prompt_text, review=review)
            return res, _prepare(res, settings)

        return self._submit(make, f"SAM3: {prompt_text}", group, self._take_result, status=status)

    def _take_result(self, out) -> None:
        """Main thread: a model run's result becomes the one the re-filter controls drive."""
        res, prepared = out
        if not self.image_still_valid(res.image, res.ref):
            return
        self.last_text = res
        self._apply(res, prepared, from_model=True)

    def refilter(self, settings: L.FilterSettings):
        """Re-filter the last text result (no model call) in a worker; the layer updates after."""
        res = self.last_text
        if res is None:
            return None
        # Layers the result will need (built in the worker): removed, not made yet, or edited by the
        # user (an edited layer is kept as it is; see _napari.text_result).
        build = res.layers_to_build(self.adder)

        def make():
            yield Progress("Re-filtering the last result...")
            return _prepare(res, settings, *build)

        return self._submit_quick(
            make, "SAM3: re-filter", "refilter", lambda prepared: self._apply(res, prepared)
        )

    def _apply(self, res: TextResult, prepared: L.PreparedResult, from_model=False) -> None:
        """Main thread: the prepared data into the driven layer, or a new one if that was edited."""
        if res is not self.last_text or not res.image_present(self.viewer):
            return
        self.say(R.apply_prepared(self.viewer, self.adder, res, prepared))
        self.events.result(value=prepared, from_model=from_model)

    def driven_text(self) -> str:
        """Which layer the re-filter controls drive (the last result's), and which were kept."""
        res = self.last_text
        name = res.layer.name if res is not None and res.layer is not None else None
        text = f"Controls drive: '{name}'" if name else "Controls drive: no result yet."
        kept = [ly.name for ly in (res.kept if res is not None else []) if ly in self.viewer.layers]
        if kept:
            text += "\nKept as you edited them: " + ", ".join(f"'{k}'" for k in kept)
        return text

    # ------------------------------------------------------------------ tracking
    def run_track(self, run: PlaneRun, concepts_text: str, min_score: float):
        """Track the concepts through the stack (see `_napari.track_result`); the submitted job."""
        from napari_sam3.core.tracking.stack_tracking import iter_track_stack

        image, ref = run.image, run.ref
        if not T.can_track(image):
            raise Sam3Error("Track through slices needs a z or t stack; use Run on a single plane.")
        concepts = concepts_typed(concepts_text)
        if not concepts:
            raise Sam3Error("Type a concept to track (e.g. 'nucleus').")
        data, pre, holder = image.data, run.preprocessing, self.holder
        source, device = run.model
        what = ", ".join(concepts)

        def make():
            engine = yield from holder.iter_engine(source, device)
            yield Progress("Reading the stack...")
            stack = T.read_stack(data, ref)
            # start on the slice the user is looking at: its objects get ids first, then both ways
            result = yield from iter_track_stack(
                engine,
                stack,
                concepts,
                preprocessing=pre,
                rgb=ref.rgb,
                min_score=min_score,
                start=int(ref.index[-1]),
            )
            kwargs = T.track_layer_kwargs(result, ref, f"SAM3 track: {what}")
            return result, T.stack_labels_layer(result.labels, ref, kwargs)

        def done(out) -> None:
            self._add_stack_result(out, image, ref, f"Tracked {out[0].n_tracks} object(s)")

        return self._submit(
            make,
            f"SAM3: track {what}",
            "track",
            done,
            status=f"Tracking '{what}' through the stack...",
        )

    # ------------------------------------------------------------------ propagation
    def new_object(self, image) -> int | None:
        """Start a new object on ``image`` 's prompt layers (None when it has none yet)."""
        clicks, boxes = prompt_layers(self.viewer, image)
        if clicks is None and boxes is None:
            return None
        obj = PR.new_object(clicks, boxes)
        self.say(f"Clicks and boxes now belong to object {obj}.")
        return obj

    def run_propagation(self, run: PlaneRun):
        """The clicked / boxed objects of the stack carried through it (`_napari.propagation`).

        One Labels layer "SAM3 objects: <image>" over the tracked axis results; returns the
        submitted job. Raises `Sam3Error` (what to fix) for a single plane or no prompts.
        """
        from napari_sam3.core.tracking.click_tracking import iter_track_objects

        image, ref = run.image, run.ref
        if not T.can_track(image):
            raise Sam3Error("Propagating needs a z or t stack; use the clicks on a single plane.")
        clicks, boxes = prompt_layers(self.viewer, image)
        n_slices = int(L.level0(image.data).shape[len(ref.index) - 1])
        prompts = PR.object_prompts(clicks, boxes, ref, n_slices)
        data, pre, holder = image.data, run.preprocessing, self.holder
        source, device = run.model
        objects = sorted({p.obj_id for p in prompts})

        def make():
            engine = yield from holder.iter_engine(source, device)
            yield Progress("Reading the stack...")
            stack = T.read_stack(data, ref)
            result = yield from iter_track_objects(
                engine, stack, prompts, preprocessing=pre, rgb=ref.rgb
            )
            features = PR.propagation_features(result.table, objects)
            kwargs = T.track_layer_kwargs(result, ref, f"SAM3 objects: {image.name}", features)
            return result, T.stack_labels_layer(result.labels, ref, kwargs)

        def done(out) -> None:
            self._add_stack_result(out, image, ref, f"Propagated {len(objects)} object(s)")

        return self._submit(
            make,
            "SAM3: propagate clicks",
            "track",
            done,
            status="Propagating the clicked objects...",
        )

    def _add_stack_result(self, out, image, ref: L.PlaneRef, what: str) -> None:
        """Main thread: a tracked / propagated ``(result, layer)`` into the viewer, with a status."""
        result, layer = out
        if not self.image_still_valid(image, ref):
            return
        self.adder.add(layer)
        self.say(
            f"{what} through {result.meta['frames']} slices "
            f"({result.meta['seconds_per_frame']:.1f} s per slice) in '{layer.name}'."
        )

    # ------------------------------------------------------------------ adapt SAM3
    def run_adapt(self, model: tuple[str, str], settings=None):
        """Adapt SAM3 to the last text result as the user left it (`_napari.adapt_session`).

        A better adapter becomes the holder's (the next runs use it); ``last_adapt`` and the
        ``adapted`` event get the outcome. Raises `Sam3Error` when there is nothing to learn from.
        """
        from napari_sam3._napari.adapt_session import adapt_concept, iter_adapt_result
        from napari_sam3.core.sam3.adapt import AdaptSettings

        result = self.last_text
        concept = adapt_concept(result)
        settings = settings or AdaptSettings(concept)
        holder = self.holder
        source, device = model

        def make():
            return (yield from iter_adapt_result(holder, source, device, result, settings))

        def done(adapted) -> None:
            self.last_adapt = adapted
            self.say(adapted.message)
            self.events.adapted(value=adapted)

        return self._submit(
            make, f"SAM3: adapting to '{concept}'", "adapt", done, status="Adapting SAM3..."
        )

    def save_adapter(self, path):
        """Write the last adaptation to ``path`` (the caller asked before replacing a file)."""
        from napari_sam3.io.adapter_file import write_adapter

        if self.last_adapt is None:
            return None
        written = write_adapter(self.last_adapt.adapter, path, overwrite=True)
        self.say(f"Adapter written to {written}.")
        return written


def _prepare(res: TextResult, settings: L.FilterSettings, main=True, hidden=True):
    """Worker: ``res`` filtered by ``settings`` and its layers built (first run and re-filter)."""
    prepared = L.prepare_filtered(res.raw, res.ref, res.prompt_text, settings)
    if res.review:
        prepared.kwargs["features"] = with_status(prepared.kwargs["features"])
    return B.build_result_layers(prepared, res.ref, main, hidden)
