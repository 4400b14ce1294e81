"""What a batch run does; picklable (sent to Dask workers) and fingerprinted (resume checks)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from napari_sam3.core.defaults import MASK_THRESHOLD, MODEL_ID, SCORE_THRESHOLD


@dataclass(frozen=True)
class BatchSettings:
    """Options of one run.

    ``command`` is ``"segment"`` or ``"count"``; ``method`` is ``"sam3"`` or ``"classical"``
    (segment is always ``"sam3"``). ``prompts`` are concepts; ``exemplars`` pixel boxes
    ``(x0, y0, x1, y1)`` used on every image (positive: "objects like this");
    ``negative_exemplars`` boxes of the same form labelled negative ("not like this"). ``tile`` is None, ``"auto"`` or a tile size in pixels.
    ``refine`` is the mask refinement of ``segment`` (`core.results.refine`): ``"low"`` (raw masks),
    ``"medium"`` or ``"high"``.
    """

    command: str = "segment"
    method: str = "sam3"
    prompts: tuple[str, ...] = ()
    exemplars: tuple[tuple[float, float, float, float], ...] = ()
    negative_exemplars: tuple[tuple[float, float, float, float], ...] = ()
    exemplar_from: tuple = ()  # `batch.exemplar_from.ExemplarSource` s: boxes on a reference image
    model: str | None = None
    device: str = "auto"
    threshold: float = SCORE_THRESHOLD
    mask_threshold: float = MASK_THRESHOLD
    tile: str | int | None = None
    diameter: float | None = None
    formats: tuple[str, ...] = ("tiff",)
    overwrite: bool = False
    refine: str = "low"
    polarity: str = "auto"  # classical count: "auto", "bright" or "dark" (forces the count)
    net: str | None = None  # learned count: a nucleus-network file of the user's (None: shipped)
    adapter: str | None = None  # a SAM3 adapter file (core.sam3.adapter), absolute path
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        """Checked here too, so ``run_batch(BatchSettings(...))`` from Python fails before any
        image, as the CLI does (`core.validation`, the one concept parser)."""
        from napari_sam3.core.prompts import concepts_typed
        from napari_sam3.core.validation import check_choice, check_diameter, check_fraction

        object.__setattr__(self, "diameter", check_diameter(self.diameter))
        check_choice(self.command, ("segment", "count"), "command")
        check_fraction(self.threshold, "threshold")  # named as this class names them
        check_fraction(self.mask_threshold, "mask_threshold")
        if self.prompts:
            object.__setattr__(self, "prompts", tuple(concepts_typed(list(self.prompts))))
        # the request checks the rest (boxes, tile, method, polarity, refine, net...)
        self.count_request() if self.command == "count" else self.segment_request()

    @classmethod
    def from_request(cls, request, **io) -> BatchSettings:
        """Settings of a `core.requests.CountRequest` / `SegmentRequest` plus the run's io
        (``model``, ``device``, ``formats``, ``overwrite``, ``adapter``): batch = request + io.
        The fields keep their names of before the requests, so a rerun keeps its fingerprint."""
        from napari_sam3.core.requests import CountRequest

        labels = request.labels()
        common = {
            "prompts": request.concepts,
            "exemplars": tuple(b for b, v in zip(request.exemplars, labels, strict=True) if v),
            "negative_exemplars": tuple(
                b for b, v in zip(request.exemplars, labels, strict=True) if not v
            ),
            "threshold": request.min_score,
            "mask_threshold": request.mask_threshold,
        }
        if isinstance(request, CountRequest):
            return cls(
                command="count",
                method=request.method,
                # count: no tile given is "auto" (its default), so a rerun keeps its fingerprint
                tile={"auto": None, None: "none"}.get(request.tile, request.tile),
                diameter=request.diameter,
                polarity=request.polarity,
                net=request.net,
                **common,
                **io,
            )
        return cls(
            command="segment",
            method="sam3",
            exemplar_from=request.exemplar_from,
            tile=request.tile,
            refine=request.refine,
            **common,
            **io,
        )

    def segment_request(self):
        """The `core.requests.SegmentRequest` of ``segment`` settings (checked there)."""
        from napari_sam3.core.requests import SegmentRequest

        boxes, labels = self.exemplar_boxes()
        return SegmentRequest(
            concepts=self.prompts,
            exemplars=boxes,
            exemplar_labels=labels,
            exemplar_from=self.exemplar_from,
            min_score=self.threshold,
            mask_threshold=self.mask_threshold,
            tile=self.tile,
            refine=self.refine,
        )

    def count_request(self, tile="default"):
        """The `core.requests.CountRequest` of these settings (checked there): what ``count``
        runs per file, and ``segment --tile`` per plane. ``count`` tiles SAM3 by default
        ("auto"); ``tile`` overrides the settings' tiling."""
        from napari_sam3.core.requests import CountRequest

        if tile == "default":
            tile = "auto" if self.command == "count" and self.tile is None else self.tile
        boxes, labels = self.exemplar_boxes()
        return CountRequest(
            method=self.method,
            diameter=self.diameter,
            concepts=self.prompts,
            exemplars=boxes,
            exemplar_labels=labels,
            min_score=self.threshold,
            mask_threshold=self.mask_threshold,
            tile=tile,
            polarity=self.polarity,
            net=self.net,
        )

    def result_fields(self) -> dict:
        """The options that change the result (not formats, device, overwrite)."""
        d = asdict(self)
        for k in ("formats", "device", "overwrite", "extra"):
            d.pop(k)
        if self.command != "segment":  # counting does not refine masks
            d.pop("refine")
        d["model"] = self.model_label()
        # Negatives recorded as one labelled box list (as the engine takes them); runs without
        # negatives keep the fields (and fingerprint) they had before negatives existed.
        d.pop("negative_exemplars")
        # reference images by content + boxes; runs without them keep their old fingerprint
        sources = d.pop("exemplar_from")
        if sources:
            d["exemplar_from"] = [s.fingerprint() for s in self.exemplar_from]
        if self.polarity == "auto":  # runs from before --polarity keep their fingerprint
            d.pop("polarity")
        net = d.pop("net")  # by content: a retrained file under the same name is another run
        if net is not None and self.method == "learned":
            from napari_sam3.core.learned.model_file import file_sha256

            d["net_sha256"] = file_sha256(net)
        d.pop("adapter")  # by content when given; runs without one keep their fingerprint
        if self.adapter:
            from napari_sam3.io.adapter_file import adapter_digest

            d["adapter"] = adapter_digest(self.adapter)
        if self.negative_exemplars:
            boxes, labels = self.exemplar_boxes()
            d["exemplars"] = boxes
            d["exemplar_labels"] = labels
        return d

    def exemplar_boxes(self) -> tuple[list[list[float]], list[int]]:
        """All exemplar boxes, positives then negatives, and their labels (1 / 0)."""
        pos = [list(b) for b in self.exemplars]
        neg = [list(b) for b in self.negative_exemplars]
        return pos + neg, [1] * len(pos) + [0] * len(neg)

    def model_label(self) -> str | None:
        if self.method != "sam3":
            return None
        from napari_sam3.core.sam3.loading import resolve_source

        try:
            return resolve_source(self.model)
        except Exception:  # noqa: BLE001 - naming only
            return self.model or MODEL_ID

    def fingerprint(self) -> str:
        text = json.dumps(self.result_fields(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_prompts(text: str | list[str] | None) -> tuple[str, ...]:
    """``"nucleus, mitotic cell"`` (or several --prompt options) -> ``("nucleus", "mitotic cell")``."""
    from napari_sam3.core.prompts import concepts_typed  # the one concept parser

    return tuple(concepts_typed(text))


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` -> a tuple; ValueError with the expected form otherwise."""
    from napari_sam3.core.errors import Sam3Error
    from napari_sam3.core.requests import parse_box as parse

    try:
        return parse(text)
    except Sam3Error as exc:
        raise ValueError(str(exc)) from None
