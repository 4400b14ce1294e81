"""THE count loop: request -> `iter_run` -> counter -> result, for every front end.

`count_stack`, the Count tab (one plane or all slices), ``napari-sam3 count`` and
`batch.run_batch` all count through `CountRun`, so they share three rules:

* the stack loop (`iter_run`: progress per plane, cancel between planes);
* ONE diameter per stack: a z/t stack is one object of study (its planes share optics and sample),
  so without a given diameter the learned and classical counters estimate one over all planes
  (`count.stack_count_options`) and count every plane at it; a dim or empty plane cannot invent a
  scale of its own. A stack of one plane is a plane (its own estimate);
* huge planes (over `large_plane.LARGE_PLANE_PIXELS`) are counted tile by tile
  (`large_plane.iter_count_large_plane`), memory bounded by the tile, not the plane.

``planes`` needs only ``len`` and integer indexing (an array, a dask array, a lazy reader over a
layer's slices or a file's planes): each plane is read when it is counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_sam3.core.counting import large_plane
from napari_sam3.core.counting.count import CountResult, iter_count, stack_count_options
from napari_sam3.core.defaults import WITHOUT_SAM3
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.progress import Progress, ProgressGen
from napari_sam3.core.requests import CountRequest

__all__ = ["CountRun", "iter_run", "stack_results"]


class CountRun:
    """A `CountRequest` over one stack of ``planes``: count any plane (`iter_plane`), in any order.

    The stack's diameter is estimated when first needed and kept, so a caller that counts only
    some planes (a batch rerun that skips the complete ones) estimates nothing it does not use.
    ``scale`` (sy, sx), ``channel`` and ``rgb`` are the planes' own facts; ``engine`` is the SAM3
    engine of ``method="sam3"``.
    """

    def __init__(
        self,
        request: CountRequest,
        planes,
        *,
        engine=None,
        scale: tuple[float, float] | None = None,
        channel: int | None = None,
        rgb: bool | None = None,
    ) -> None:
        if not isinstance(request, CountRequest):
            raise Sam3Error(f"A CountRequest is needed, got {type(request).__name__}.")
        self.request, self.planes, self.engine = request, planes, engine
        self.scale, self.channel, self.rgb = scale, channel, rgb
        self._stack_diameter: float | None = None
        self._estimated = False

    def __len__(self) -> int:
        return len(self.planes)

    def iter_diameter(self) -> ProgressGen[tuple[float | None, str]]:
        """``(diameter, source)``: the given one ("given"), the stack's ONE estimate ("stack"), or
        None: each plane estimates its own ("plane")."""
        r = self.request
        if r.diameter is not None:
            return r.diameter, "given"
        if not self._estimated and r.one_stack_diameter and len(self.planes) > 1:
            yield Progress("Estimating one object diameter for the stack", 0, None)
            opts = stack_count_options(
                self.planes,
                r.method,
                polarity=r.polarity,
                channel=self.channel,
                rgb=self.rgb,
                net=r.net,
            )
            self._stack_diameter = opts.get("diameter")
        self._estimated = True
        if self._stack_diameter is not None:
            return self._stack_diameter, "stack"
        return None, "plane"

    def iter_plane(self, i: int, *, engine=None) -> ProgressGen[CountResult]:
        """Count plane ``i``; its `CountResult` has ``meta["diameter_source"]``."""
        diameter, source = yield from self.iter_diameter()
        plane = self.planes[i]
        r = self.request
        if (
            r.method in WITHOUT_SAM3
            and self.channel is None
            and large_plane.is_large_plane(plane, self.rgb)
        ):
            result = yield from self._iter_large(np.asarray(plane), diameter)
        else:
            options = {**r.count_options(), "diameter": diameter}
            result = yield from iter_count(
                plane,
                r.method,
                engine=engine if engine is not None else self.engine,
                scale=self.scale,
                channel=self.channel,
                rgb=self.rgb,
                diameter_source="stack" if source == "stack" else "given",
                **options,
            )
        result.meta["diameter_source"] = source
        return result

    def _iter_large(self, plane: np.ndarray, diameter) -> ProgressGen[CountResult]:
        r = self.request
        labels, table, used = yield from large_plane.iter_count_large_plane(
            plane,
            diameter,
            rgb=self.rgb,
            tile=large_plane.TILE,
            scale=self.scale,
            polarity=r.polarity,
            method=r.method,
            net=r.net,
        )
        count = int(len(table))
        return CountResult(
            labels=labels,
            table=table,
            count=count,
            counts={r.method: count},
            method=r.method,
            diameter=float(used),
            warnings=[] if count else ["No objects were found."],
            meta={"large_plane": True, "tile": large_plane.TILE},
        )


def iter_run(
    request: CountRequest, planes, *, names=None, stack_labels: bool = True, **facts
) -> ProgressGen[CountResult]:
    """Count every plane of ``planes`` with ``request``; yields `Progress` (per plane, and the
    counter's own); returns one `CountResult`: (N, H, W) labels, a table with a ``slice`` column,
    ``plane_counts``, the total ``count`` and ``plane_results`` (each plane's own result).

    ``facts``: the planes' ``scale``, ``channel``, ``rgb`` and the sam3 ``engine`` (`CountRun`).
    ``names`` (optional, one per plane) label the progress ("slice 3/10 [0,2]");
    ``stack_labels=False`` leaves ``labels`` None (the caller lays out ``plane_results`` itself).
    """
    run = CountRun(request, planes, **facts)
    n = len(planes)
    if n == 0:
        raise Sam3Error("There are no planes to count.")
    what = "slice" if names is not None else "plane"
    results = []
    for i in range(n):
        where = f" [{names[i]}]" if names is not None else ""
        yield Progress(f"Counting {what} {i + 1}/{n}{where}", i, n)
        results.append((yield from run.iter_plane(i)))
    yield Progress(f"Counted {n} {what}s", n, n)
    return stack_results(results, request.method, stack_labels=stack_labels)


def stack_results(results: list, method: str, *, stack_labels: bool = True) -> CountResult:
    """One `CountResult` of per-plane results (the table gains a ``slice`` column: the stack index,
    named as in the Count tab's table and the batch `counts.csv`)."""
    tables, counts, warnings = [], {}, []
    for i, res in enumerate(results):
        t = res.table.copy()
        t.insert(0, "slice", i)
        tables.append(t)
        for k, v in res.counts.items():
            counts[k] = counts.get(k, 0) + v
        warnings.extend(f"plane {i}: {w}" for w in res.warnings)
    diameters = np.array([r.diameter for r in results], float)
    sources = {r.meta.get("diameter_source") for r in results}
    source = sources.pop() if len(sources) == 1 else "mixed"
    source = "per plane" if source == "plane" else source
    meta = {k: v for k, v in results[-1].meta.items() if k != "diameter_source"}
    return CountResult(
        labels=np.stack([np.asarray(r.labels) for r in results]) if stack_labels else None,
        table=pd.concat(tables, ignore_index=True),
        count=int(sum(r.count for r in results)),
        counts=counts,
        method=method,
        diameter=float(np.nanmedian(diameters)) if np.isfinite(diameters).any() else float("nan"),
        warnings=warnings,
        plane_counts=[int(r.count) for r in results],
        meta={**meta, "planes": len(results), "diameter_source": source},
        plane_results=list(results),
    )
