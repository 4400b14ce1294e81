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
from napari_sam3.core import requests as core_requests
from napari_sam3.core.defaults import COUNT_METHODS
from napari_sam3.core.progress import Progress
from napari_sam3.io.tables import write_table_csv

METHODS = COUNT_METHODS


@dataclass(frozen=True)
class CountRequest(core_requests.CountRequest):
    """The Count controls: the core `CountRequest` (validated at construction) plus where its
    exemplar boxes come from (``use_boxes``: the image's boxes layer on the counted plane, read at
    run time) and whether every slice of the stack is counted (``all_slices``)."""

    use_boxes: bool = False
    all_slices: bool = False

    def _exemplars_later(self) -> bool:
        return self.use_boxes


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
        """Count ``run``'s plane (or, with ``request.all_slices``, every slice); the submitted job.

        One path for both: ``request`` -> `core.counting.run.iter_run` over the slices (read
        lazily) -> layers, so the stack rules (ONE diameter per stack, huge planes tiled) are the
        ones of `count_stack` and ``napari-sam3 count``."""
        image, ref, method = run.image, run.ref, request.method
        sam3 = method == "sam3"
        exemplar_labels = None
        if sam3 and request.use_boxes:
            exemplars, exemplar_labels = self._exemplars(image, ref)
            if exemplars is not None:
                request = replace(request, exemplars=exemplars, exemplar_labels=exemplar_labels)
            elif not request.concepts:
                request = replace(request, use_boxes=False)  # Sam3Error: concepts or boxes
        stack = bool(request.all_slices and ref.index)
        data, holder = image.data, self.holder
        indices = slice_indices(ref, data) if stack else [ref.index]
        source, device = run.model
        facts = {
            "scale": tuple(float(s) for s in ref.geometry["scale"][-2:]),
            "channel": run.preprocessing.channel,
            "rgb": ref.rgb,
        }

        def make():
            from napari_sam3.core.counting.run import iter_run

            engine = (yield from holder.iter_engine(source, device)) if sam3 else None
            yield Progress("Reading the image plane...")
            names = [",".join(map(str, idx)) for idx in indices] if stack else None
            planes = _Slices(data, ref, indices)
            result = yield from iter_run(
                request, planes, engine=engine, names=names, stack_labels=False, **facts
            )
            if stack:
                yield Progress(f"Counted {len(indices)} slices; building layers...")
                out = prepare_count_stack(result.plane_results, indices, ref)
                geometry = L.full_geometry(ref)
            else:
                yield Progress(f"Counted {result.count} objects; building layers...")
                out = prepare_count(result.plane_results[0], ref)
                geometry = L.placed_geometry(ref)
            name = count_name(ref, method, all_slices=stack)
            out.labels_layer, out.points_layer = B.count_layers(out, name, geometry, out.diameter)
            return out

        def done(out: PreparedCount) -> None:
            lines = [stack_summary(out) if stack else f"Total: {out.count} objects"]
            if sam3 or len(out.counts) > 1:
                lines += [f"  {k}: {v}" for k, v in out.counts.items()]
            if exemplar_labels is not None:
                n_pos = int(np.sum(np.asarray(exemplar_labels) == 1))
                lines.append(
                    f"Exemplar boxes: {n_pos} positive, {len(exemplar_labels) - n_pos} negative"
                )
            if np.isfinite(out.diameter):
                lines.append(f"Diameter used{' (median)' if stack else ''}: {out.diameter:.1f} px")
            self._show(out, run, lines)

        where = f"all {len(indices)} slices of" if stack else "on"
        where += f" {ref.layer_name}{'' if stack else ref.slice_text()}"
        return self._submit(
            make,
            f"SAM3 count ({method}{', all slices' if stack else ''})",
            "count",
            done,
            status=f"Counting ({method}) {where}...",
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
