"""The Segment tab's run state and steps, without Qt: text / exemplar runs, re-filter, clicks, tracking.

`SegmentSession` holds what a run leaves behind (the last text result and the layer its re-filter
controls drive; through `ClickSession` the click candidates, the preview and the commit target) and
the steps that make and use it. It takes plain values (concept text, `FilterSettings`, the image and
plane, the model source) and never reads a widget. Jobs go through the ``submit`` callables it is
given (the Qt shell's `JobRunner`; a synchronous driver in tests), with the signature
``submit(make, desc, group, on_result, status=None)``. It reports back through ``events``:
``status`` (a line for the user) and ``result`` (the driven layer changed; ``from_model`` says whether
a model run, not a re-filter, produced it).

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
from napari_sam3._napari import text_result as R
from napari_sam3._napari import track_result as T
from napari_sam3._napari.click_session import ClickSession, prompt_layers
from napari_sam3._napari.notify import notify_info
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.text_result import TextResult
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress
from napari_sam3.core.prompts import concepts_typed


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
        self.events = EmitterGroup(source=self, status=None, result=None)
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
            shape = tuple(L._level0(image.data).shape)
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
        image, ref = run.image, run.ref
        concepts = concepts_typed(concepts_text)  # Sam3Error for e.g. digits only
        boxes = np.zeros((0, 4), np.float32)
        box_labels = np.zeros(0, np.int64)
        _, box_layer = prompt_layers(self.viewer, image)
        if box_layer is not None and exemplars:
            boxes, box_labels = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
        if not concepts and len(boxes) == 0:
            if not exemplars:
                return self.clicks.run_clicks(image, ref, True, run.preprocessing, run.model)
            raise Sam3Error("Type a concept (e.g. 'nucleus') or draw an exemplar box.")
        data, pre, holder = image.data, run.preprocessing, self.holder
        source, device = run.model
        prompt_text = ", ".join(concepts) if concepts else "exemplars"

        def make():
            engine = yield from holder.iter_engine(source, device)
            yield Progress("Reading the image plane...")
            plane = L.read_plane(data, ref)
            if len(boxes):
                text = ", ".join(concepts) if concepts else None
                raw = yield from engine.iter_exemplars(
                    plane, boxes, box_labels, text=text, preprocessing=pre, rgb=ref.rgb
                )
            else:
                raw = yield from engine.iter_text(plane, concepts, preprocessing=pre, rgb=ref.rgb)
            yield Progress(f"Building the label image ({len(raw)} candidates)...")
            prepared = L.prepare_filtered(raw, ref, prompt_text, settings)
            return raw, B.build_result_layers(prepared, ref)

        def done(out) -> None:
            raw, prepared = out
            if not self.image_still_valid(image, ref):
                return
            self.last_text = TextResult(raw=raw, ref=ref, image=image, prompt_text=prompt_text)
            self._apply(self.last_text, prepared, from_model=True)

        return self._submit(
            make,
            f"SAM3: {prompt_text}",
            "text",
            done,
            status=f"Running '{prompt_text}' on {ref.layer_name}{ref.slice_text()}...",
        )

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
            prepared = L.prepare_filtered(res.raw, res.ref, res.prompt_text, settings)
            return B.build_result_layers(prepared, res.ref, *build)

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
            level0 = L._level0(data)
            stack = np.asarray(level0[ref.index[:-1]] if len(ref.index) > 1 else level0)
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
            shape = (1,) * (len(ref.index) - 1) + result.labels.shape
            kwargs = T.track_layer_kwargs(result, ref, f"SAM3 track: {what}")
            return result, B.labels_layer(result.labels.reshape(shape), kwargs)

        def done(out) -> None:
            result, layer = out
            if not self.image_still_valid(image, ref):
                return
            self.adder.add(layer)
            self.say(
                f"Tracked {result.n_tracks} object(s) through {result.meta['frames']} slices "
                f"({result.meta['seconds_per_frame']:.1f} s per slice) in '{layer.name}'."
            )

        return self._submit(
            make,
            f"SAM3: track {what}",
            "track",
            done,
            status=f"Tracking '{what}' through the stack...",
        )
