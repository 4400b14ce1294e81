"""The Count tab's run state and steps, without Qt: count a plane or every slice, show, export.

`core.counting.iter_count` runs in a job submitted through the ``submit`` callable the session is
given (``submit(make, desc, group, on_result, status=None)``: the Qt shell's `JobRunner`, or a
synchronous driver). The result becomes a Labels layer (objects, with the measurements as
``features``) and a Points layer (centroids), built in the worker and placed on the plane the count
ran on, plus a summary and a table. The session keeps the last count (``last``) for the CSV export and
reports through ``events``: ``result`` (``value``: the `PreparedCount`, ``lines``: the summary) and
``status``.

With ``all_slices`` on an nD stack, every slice (each position on the leading, non-displayed axes) is
counted in turn (progress per slice, Cancel between slices); the result is one stack-sized Labels
layer with ids unique across slices, centroids with the slice index as leading coordinate(s), a
per-slice summary and a table with a ``slice`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from napari.utils.events import EmitterGroup

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari.count_results import (
    PreparedCount,
    count_name,
    prepare_count,
    prepare_count_stack,
    slice_indices,
    stack_summary,
)
from napari_sam3._napari.notify import notify_info, notify_warning
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3.core.defaults import COUNT_METHODS, DEFAULT_COUNT_METHOD, WITHOUT_SAM3
from napari_sam3.core.progress import Progress
from napari_sam3.io.tables import write_table_csv

METHODS = COUNT_METHODS


@dataclass(frozen=True)
class CountRequest:
    """The Count controls: method, diameter (None: estimate), concepts, exemplar boxes, all slices."""

    method: str = DEFAULT_COUNT_METHOD
    diameter: float | None = None
    concepts: str = ""
    use_boxes: bool = False
    all_slices: bool = False
    net: str | None = None  # learned: a network file of the user's (None: the shipped one)


class CountSession:
    """Counts on one viewer and the last one's layers and table."""

    def __init__(self, viewer, holder, submit, later) -> None:
        self.viewer = viewer
        self.holder = holder
        self._submit = submit
        self.adder = B.LayerAdder(viewer, later)  # objects now, centroids on the next turn
        self.last: PreparedCount | None = None
        self.events = EmitterGroup(source=self, result=None, status=None)

    def close(self) -> None:
        self.adder.close()

    def _exemplars(self, image, ref: L.PlaneRef):
        """The positive / negative boxes of ``image`` on ``ref``'s plane, or (None, None)."""
        boxes_layer = P.find_prompt_layer(self.viewer, "boxes", image)
        if boxes_layer is not None:
            boxes, labels = L.boxes_in_plane(boxes_layer.data, P.signs_of(boxes_layer), ref)
            if len(boxes):
                return boxes, labels
        notify_info(
            f"No boxes of '{image.name}' on this slice: counting with the concepts only "
            "(draw boxes after Segment > Add click + box layers)."
        )
        return None, None

    # ------------------------------------------------------------------ run
    def run_count(self, run: PlaneRun, request: CountRequest):
        """Count ``run``'s plane (or, with ``request.all_slices``, every slice); the submitted job."""
        image, ref, method = run.image, run.ref, request.method
        sam3 = method == "sam3"
        exemplars = exemplar_labels = None
        if sam3 and request.use_boxes:
            exemplars, exemplar_labels = self._exemplars(image, ref)
        options = {
            "diameter": request.diameter,
            "prompt": request.concepts if sam3 else None,
            "exemplars": exemplars,
            "exemplar_labels": exemplar_labels,
            "scale": tuple(float(s) for s in ref.geometry["scale"][-2:]),
            "channel": run.preprocessing.channel,
            "rgb": ref.rgb,
            "net": request.net,
        }
        if request.all_slices and ref.index:
            return self._run_stack(run, method, options)
        data, holder = image.data, self.holder
        source, device = run.model

        def make():
            from napari_sam3.core.counting.count import iter_count

            engine = (yield from holder.iter_engine(source, device)) if sam3 else None
            yield Progress("Reading the image plane...")
            plane = L.read_plane(data, ref)
            result = yield from iter_count(plane, method, engine=engine, **options)
            yield Progress(f"Counted {result.count} objects; building layers...")
            out = prepare_count(result, ref)
            name = count_name(ref, method)
            layers = B.count_layers(out, name, L.placed_geometry(ref), result.diameter)
            out.labels_layer, out.points_layer = layers
            return out

        def done(out: PreparedCount) -> None:
            lines = [f"Total: {out.count} objects"]
            if sam3 or len(out.counts) > 1:
                lines += [f"  {k}: {v}" for k, v in out.counts.items()]
            if exemplar_labels is not None:
                n_pos = int(np.sum(np.asarray(exemplar_labels) == 1))
                lines.append(
                    f"Exemplar boxes: {n_pos} positive, {len(exemplar_labels) - n_pos} negative"
                )
            if np.isfinite(out.diameter):
                lines.append(f"Diameter used: {out.diameter:.1f} px")
            self._show(out, run, lines)

        return self._submit(
            make,
            f"SAM3 count ({method})",
            "count",
            done,
            status=f"Counting ({method}) on {ref.layer_name}{ref.slice_text()}...",
        )

    def _run_stack(self, run: PlaneRun, method: str, options: dict):
        """Count every slice of the image in the worker (progress per slice, cancel between)."""
        ref, data, holder = run.ref, run.image.data, self.holder
        source, device = run.model
        indices = slice_indices(ref, data)

        def make():
            from napari_sam3.core.counting.count import iter_count, stack_count_options

            engine = None
            if method == "sam3":
                engine = yield from holder.iter_engine(source, device)
            opts = options
            if method in WITHOUT_SAM3 and options.get("diameter") is None:
                # a z/t stack is one object of study: ONE diameter for all its slices
                yield Progress("Estimating one object diameter for all slices...", 0, None)
                slices = _Slices(data, ref, indices)
                opts = stack_count_options(slices, method, **options)
            results = []
            n = len(indices)
            for k, idx in enumerate(indices):
                where = ",".join(map(str, idx))
                yield Progress(f"Counting slice {k + 1}/{n} [{where}]...", k, n)
                plane = L.read_plane(data, replace(ref, index=idx))
                result = yield from iter_count(plane, method, engine=engine, **opts)
                results.append(result)
            yield Progress(f"Counted {n} slices; building layers...", n, n)
            out = prepare_count_stack(results, indices, ref)
            name = count_name(ref, method, all_slices=True)
            layers = B.count_layers(out, name, L.full_geometry(ref), out.diameter)
            out.labels_layer, out.points_layer = layers
            return out

        def done(out: PreparedCount) -> None:
            lines = [stack_summary(out)]
            if method == "sam3" or len(out.counts) > 1:
                lines += [f"  {k}: {v}" for k, v in out.counts.items()]
            if np.isfinite(out.diameter):
                lines.append(f"Diameter used (median): {out.diameter:.1f} px")
            self._show(out, run, lines)

        return self._submit(
            make,
            f"SAM3 count ({method}, all slices)",
            "count",
            done,
            status=f"Counting ({method}) all {len(indices)} slices of {ref.layer_name}...",
        )

    def _show(self, out: PreparedCount, run: PlaneRun, lines: list[str]) -> None:
        """Main thread: the layers (one per event-loop turn), the summary and the table."""
        image = run.image
        if image not in self.viewer.layers:
            notify_info(
                f"The image '{run.ref.layer_name}' was removed during the count; result dropped."
            )
            return
        self.adder.add(out.labels_layer, out.points_layer, when=lambda: image in self.viewer.layers)
        self.last = out
        self.events.result(value=out, lines=lines)
        for warning in out.warnings:
            notify_warning(warning)
        self.events.status(value="; ".join(out.warnings) if out.warnings else "Done.")

    # ------------------------------------------------------------------ export
    def write_csv(self, path) -> str | None:
        """Write the last count's table as CSV (replacing ``path``: the caller has asked)."""
        if self.last is None:
            return None
        write_table_csv(path, self.last.export, overwrite=True)
        self.events.status(value=f"Table written to {path}")
        return str(path)


class _Slices:
    """``len`` and indexing over the slices of a layer (what the stack diameter estimate samples)."""

    def __init__(self, data, ref, indices) -> None:
        self._data, self._ref, self._indices = data, ref, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, k: int):
        return L.read_plane(self._data, replace(self._ref, index=self._indices[k]))
