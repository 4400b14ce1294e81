"""The "Segment" tab: text / exemplar / click / box prompts on the current plane -> Labels layers.

Only wiring lives here: reading the widgets, capturing the image plane at run start, submitting core
generators to the `JobRunner`, and turning results into layers with `_layers`. Everything a run needs
is captured when it starts (image layer object, plane index, geometry), so a result lands where the
user asked even if the view moved, and is dropped with a notification if the image was removed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from . import _layer_builder as B
from . import _layers as L
from . import _prompt_layers as P
from . import _track_action as T
from ._image_choice import fill_combo, layers_of
from ._tab_base import PlaneTab
from ._worker import EngineHolder, Job, JobRunner, notify_error, notify_info
from .core.candidates import Candidates
from .core.errors import Sam3Error
from .core.images import Preprocessing
from .core.progress import Progress
from .core.refine import REFINEMENT_LEVELS, REFINEMENT_TOOLTIP, filter_candidates, refine_masks

NEW_TARGET = "New layer: SAM3 annotations"
BOX_MODES = ("Exemplars: find all similar objects", "Box prompt: segment the object in the box")


@dataclass
class TextResult:
    """The last text/exemplar result: raw candidates (above the engine floor) and where they belong."""

    raw: Candidates
    ref: L.PlaneRef
    image: object
    prompt_text: str
    layer: object = None
    hidden_layer: object = None


@dataclass
class ClickResult:
    """The last click/box result: 3 candidates, the one shown, and where it belongs."""

    cands: Candidates
    ref: L.PlaneRef
    image: object
    index: int = 0


class SegmentTab(PlaneTab):
    """Prompt SAM3 on the current plane of an image layer."""

    image_tooltip = "The image to segment; nD stacks use the slice shown now."
    channel_tooltip = (
        "RGB images: use all three colours, or one channel as gray.\n"
        "Multichannel stacks: move the channel slider to the channel to segment."
    )

    def __init__(
        self, viewer, holder: EngineHolder, runner: JobRunner, model_settings, parent=None
    ):
        super().__init__(viewer, holder, runner, model_settings, parent)
        # Re-filtering never touches the model, so it has its own runner and never waits for one.
        self.post_runner = JobRunner(show_progress=False)
        self.adder = B.LayerAdder(viewer)  # result layers: one napari layer add per event-loop turn
        self._refilter_timer = QTimer(self)
        self._refilter_timer.setSingleShot(True)
        self._refilter_timer.setInterval(60)
        self._refilter_timer.timeout.connect(self.apply_filters)
        self.last_text: TextResult | None = None
        self.last_clicks: ClickResult | None = None
        self.preview_layer = None
        self._click_timer = QTimer(self)
        self._click_timer.setSingleShot(True)
        self._click_timer.setInterval(40)
        self._click_timer.timeout.connect(self.run_clicks)
        self._wired = weakref.WeakSet()  # prompt/candidate layers whose keys call this tab
        self._build()
        self.watch_viewer()
        self.image_combo.currentIndexChanged.connect(self._update_track_button)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.add_image_choice(form)
        self.concepts_edit = QLineEdit()
        self.concepts_edit.setPlaceholderText("nucleus, mitotic cell  (Enter runs)")
        self.concepts_edit.setToolTip("Comma-separated concepts; every instance of each is found.")
        self.concepts_edit.returnPressed.connect(self.run_text)
        form.addRow("Concepts", self.concepts_edit)
        self.box_mode_combo = QComboBox()
        self.box_mode_combo.addItems(BOX_MODES)
        self.box_mode_combo.setToolTip(
            "Rectangles on the boxes layer are either exemplars (examples of the concept: SAM3 finds "
            "all similar objects; negative boxes show what to avoid) or a box prompt around one "
            "object (with clicks, like SAM2)."
        )
        form.addRow("Boxes are", self.box_mode_combo)
        outer.addLayout(form)

        prompt_row = QHBoxLayout()
        self.add_prompts_btn = QPushButton("Add click + box layers")
        self.add_prompts_btn.setToolTip("Points layer for clicks, Shapes layer for rectangles.")
        self.add_prompts_btn.clicked.connect(self.add_prompt_layers)
        self.sign_btn = QPushButton("Sign: positive (N)")
        self.sign_btn.setToolTip("New clicks and boxes are positive / negative (key N).")
        self.sign_btn.clicked.connect(self.toggle_sign)
        prompt_row.addWidget(self.add_prompts_btn)
        prompt_row.addWidget(self.sign_btn)
        outer.addLayout(prompt_row)

        self.run_btn = self.add_run_row(
            outer, "Run", self.run_text, "Find every instance of the concepts (and exemplar boxes)."
        )
        self.track_btn = QPushButton("Track through slices")
        self.track_btn.setToolTip(
            "z/t stacks: follow every instance of the concepts through the slices with SAM3's "
            "video tracker (one id per object in every slice; scores above the threshold start "
            "a track)."
        )
        self.track_btn.clicked.connect(self.run_track)
        outer.addWidget(self.track_btn)

        filt = QGroupBox("Result (re-filtered without calling the model)")
        fform = QFormLayout(filt)
        thr_row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(10, 90)
        self.threshold_slider.setValue(50)
        self.threshold_label = QLabel("0.50")
        self.threshold_slider.valueChanged.connect(self._on_filter_changed)
        thr_row.addWidget(self.threshold_slider)
        thr_row.addWidget(self.threshold_label)
        fform.addRow("Score threshold", thr_row)
        self.min_area_spin = QSpinBox()
        self.min_area_spin.setRange(0, 10_000_000)
        self.min_area_spin.setSuffix(" px")
        self.min_area_spin.valueChanged.connect(self._on_filter_changed)
        fform.addRow("Min area", self.min_area_spin)
        self.refine_combo = QComboBox()
        self.refine_combo.addItems(REFINEMENT_LEVELS)
        self.refine_combo.setToolTip(REFINEMENT_TOOLTIP)
        self.refine_combo.currentIndexChanged.connect(self._on_filter_changed)
        fform.addRow("Mask refinement", self.refine_combo)
        self.hidden_check = QCheckBox("Show objects hidden by overlaps (extra layer)")
        self.hidden_check.toggled.connect(self._on_filter_changed)
        fform.addRow(self.hidden_check)
        outer.addWidget(filt)

        clicks = QGroupBox("Clicks and box prompt")
        cform = QFormLayout(clicks)
        self.candidate_label = QLabel("No candidate yet: click on the clicks layer.")
        cform.addRow(self.candidate_label)
        crow = QHBoxLayout()
        self.next_btn = QPushButton("Next candidate (C)")
        self.next_btn.clicked.connect(self.next_candidate)
        self.commit_btn = QPushButton("Commit (K)")
        self.commit_btn.setToolTip(
            "Write the candidate into the target Labels layer as a new id, only on empty pixels. "
            "Ctrl+Z on that layer undoes it."
        )
        self.commit_btn.clicked.connect(self.commit)
        crow.addWidget(self.next_btn)
        crow.addWidget(self.commit_btn)
        cform.addRow(crow)
        self.target_combo = QComboBox()
        cform.addRow("Commit into", self.target_combo)
        outer.addWidget(clicks)

        self.status_label.setText("Ready.")
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)
        keys = QLabel("Shortcuts:\n" + P.SHORTCUTS_TEXT)
        keys.setStyleSheet("color: gray;")
        keys.setWordWrap(True)
        outer.addWidget(keys)
        outer.addStretch(1)

    # ------------------------------------------------------------------ viewer wiring
    def disconnect_viewer(self) -> None:
        super().disconnect_viewer()
        for layer in list(self._wired):
            P.unbind_prompt_keys(layer)
        self._wired = weakref.WeakSet()
        self._click_timer.stop()
        self._refilter_timer.stop()
        self.post_runner.close()
        self.adder.close()

    @property
    def idle(self) -> bool:
        """No run, re-filter or debounced click/filter waiting (tests, scripts)."""
        return (
            self.runner.idle
            and self.post_runner.idle
            and self.adder.idle
            and not self._click_timer.isActive()
            and not self._refilter_timer.isActive()
        )

    def refresh_layer_choices(self, event=None) -> None:
        labels = [
            ly.name
            for ly in layers_of(self.viewer, "labels")
            if ly is not self.preview_layer and not ly.name.endswith("(hidden)")
        ]
        fill_combo(self.target_combo, [NEW_TARGET, *labels])
        super().refresh_layer_choices()
        self._update_track_button()

    def _update_track_button(self, *args) -> None:
        self.track_btn.setEnabled(T.can_track(self.image_layer()))

    def run_track(self) -> Job | None:
        """Track the typed concepts through the stack's slices (see `_track_action`)."""
        return T.start_tracking(self)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(channel=self.images.channel())

    # ------------------------------------------------------------------ prompt layers
    def add_prompt_layers(self):
        image = self.image_layer()
        try:
            ref = self.current_ref(image)
        except Sam3Error as exc:
            notify_error(exc)
            return None, None
        clicks = P.make_clicks_layer(self.viewer, image, ref)
        boxes = P.make_boxes_layer(self.viewer, image, ref)
        for layer in (clicks, boxes):
            if layer not in self._wired:
                P.bind_prompt_keys(layer, self._on_sign_toggled, self.next_candidate, self.commit)
                layer.events.data.connect(self._on_prompt_data)
                self._watched.append((layer.events.data, self._on_prompt_data))
                self._wired.add(layer)
        self._ensure_preview_layer(ref)  # created now, so the first click adds no layer
        self.viewer.layers.selection.active = clicks
        return clicks, boxes

    def _ensure_preview_layer(self, ref: L.PlaneRef, data=None, features=None):
        """The one 'SAM3 candidate' Labels layer, placed on ``ref``'s plane."""
        if data is None:
            data = np.zeros(ref.label_shape(), np.uint8)
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            B.set_changed_geometry(layer, L.placed_geometry(ref))
            if features is not None:
                layer.features = features
            return layer
        self.preview_layer = self.viewer.add_labels(
            data,
            name="SAM3 candidate",
            opacity=0.6,
            features=features,
            **L.placed_geometry(ref),
        )
        P.bind_prompt_keys(self.preview_layer, None, self.next_candidate, self.commit)
        self._wired.add(self.preview_layer)
        return self.preview_layer

    def _prompt_layers(self, image):
        return P.find_prompt_layer(self.viewer, "clicks", image), P.find_prompt_layer(
            self.viewer, "boxes", image
        )

    def toggle_sign(self) -> None:
        image = self.image_layer()
        layers = [ly for ly in self._prompt_layers(image) if ly is not None] if image else []
        if not layers:
            return
        sign = "negative" if P.current_sign(layers[0]) == "positive" else "positive"
        for layer in layers:
            P.set_sign(layer, sign)
        self._on_sign_toggled(sign)

    def _on_sign_toggled(self, sign: str) -> None:
        self.sign_btn.setText(f"Sign: {sign} (N)")

    def _on_prompt_data(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith(("adding", "removing", "changing")):
            return
        source = getattr(event, "source", None)
        role = (source.metadata.get(P.ROLE_KEY) or {}).get("role") if source is not None else None
        if role == "boxes" and self.box_mode_combo.currentIndex() == 0:
            return  # exemplar boxes wait for Run
        self._click_timer.start()

    # ------------------------------------------------------------------ text / exemplar runs
    def run_text(self) -> Job | None:
        """Run concepts (and exemplar boxes) on the current plane; a new Labels layer results."""
        image = self.image_layer()
        try:
            ref = self.current_ref(image)
        except Sam3Error as exc:
            notify_error(exc)
            return None
        concepts = [c.strip() for c in self.concepts_edit.text().split(",") if c.strip()]
        boxes = np.zeros((0, 4), np.float32)
        box_labels = np.zeros(0, np.int64)
        _, box_layer = self._prompt_layers(image)
        exemplar_mode = self.box_mode_combo.currentIndex() == 0
        if box_layer is not None and exemplar_mode:
            boxes, box_labels = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
        if not concepts and len(boxes) == 0:
            if not exemplar_mode:
                return self.run_clicks()
            notify_error(Sam3Error("Type a concept (e.g. 'nucleus') or draw an exemplar box."))
            return None
        data = image.data
        pre = self.preprocessing()
        source, device = self.model_settings()
        holder = self.holder
        prompt_text = ", ".join(concepts) if concepts else "exemplars"
        settings = self.filter_settings()

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
            prepared = L.prepare_result(raw, ref, prompt_text, *settings)
            return raw, B.build_result_layers(prepared, ref)

        return self.submit(
            make,
            f"SAM3: {prompt_text}",
            "text",
            lambda out: self._on_text_result(out, ref, image, prompt_text),
            status=f"Running '{prompt_text}' on {ref.layer_name}{ref.slice_text()}...",
        )

    def _image_still_valid(self, image, ref: L.PlaneRef) -> bool:
        if image not in self.viewer.layers:
            notify_info(f"The image '{ref.layer_name}' was removed during the run; result dropped.")
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

    def _on_text_result(self, out, ref, image, prompt_text: str) -> None:
        raw, prepared = out
        if not self._image_still_valid(image, ref):
            return
        self.last_text = TextResult(raw=raw, ref=ref, image=image, prompt_text=prompt_text)
        self._apply_prepared(self.last_text, prepared)
        if prepared["settings"] != self.filter_settings():  # slider moved during the run
            self._refilter_timer.start()

    def filter_settings(self) -> tuple:
        """(threshold, min_area, refinement, show_hidden) as the controls say now."""
        return (
            self.threshold_slider.value() / 100.0,
            self.min_area_spin.value(),
            self.refine_combo.currentText(),
            self.hidden_check.isChecked(),
        )

    def filtered(self, cands: Candidates) -> Candidates:
        """Threshold -> refinement -> min area, all without a model call."""
        thr, min_area, refinement, _ = self.filter_settings()
        return filter_candidates(cands, thr, min_area, refinement)

    def apply_filters(self) -> Job | None:
        """Re-filter the last text result (no model call) in a worker; the layer updates after."""
        res = self.last_text
        if res is None:
            return None
        settings = self.filter_settings()
        # Layers the result will need (built in the worker): ones the user removed, or not made yet.
        build = (not self.adder.alive(res.layer), not self.adder.alive(res.hidden_layer))

        def make():
            yield Progress("Re-filtering the last result...")
            prepared = L.prepare_result(res.raw, res.ref, res.prompt_text, *settings)
            return B.build_result_layers(prepared, res.ref, *build)

        job = Job(
            make=make,
            desc="SAM3: re-filter",
            group="refilter",
            on_result=lambda prepared: self._apply_prepared(res, prepared),
            on_error=self._on_error,
        )
        return self.post_runner.submit(job, replace_running=True)

    def _apply_prepared(self, res: TextResult, prepared: dict) -> None:
        """Main thread: put prepared data into the result layer (created on first use)."""
        if res is not self.last_text or res.image not in self.viewer.layers:
            return
        cands, data, kwargs = prepared["cands"], prepared["data"], prepared["kwargs"]
        if self.adder.alive(res.layer):
            res.layer.data = data
            res.layer.features = kwargs["features"]
        else:
            layer = prepared.get("layer")
            res.layer = B.labels_layer(data, kwargs) if layer is None else layer
            self.adder.add(res.layer)
        res.hidden_layer = self.adder.put_hidden(res, prepared)
        feats = kwargs["features"]
        n_hidden = int((feats["visible_area"] == 0).sum()) if len(feats) else 0
        extra = f", {n_hidden} hidden by overlaps" if n_hidden else ""
        self.set_status(
            f"{len(cands)} objects ({len(res.raw)} candidates before filtering){extra} "
            f"in '{res.layer.name}'."
        )

    def _on_filter_changed(self, *args) -> None:
        self.threshold_label.setText(f"{self.threshold_slider.value() / 100:.2f}")
        self._refilter_timer.start()  # debounced: a slider drag re-filters once it pauses
        if self.last_clicks is not None:
            self._show_candidate()

    # ------------------------------------------------------------------ clicks / box prompt
    def run_clicks(self) -> Job | None:
        """Run the tracker head on the clicks (and a box prompt) of the current plane."""
        image = self.image_layer()
        if image is None:
            return None
        try:
            ref = self.current_ref(image)
        except Sam3Error as exc:
            notify_error(exc)
            return None
        clicks_layer, box_layer = self._prompt_layers(image)
        xy = np.zeros((0, 2), np.float32)
        labels = np.zeros(0, np.int64)
        if clicks_layer is not None:
            xy, labels = L.points_in_plane(clicks_layer.data, P.signs_of(clicks_layer), ref)
        box = None
        if box_layer is not None and self.box_mode_combo.currentIndex() == 1:
            boxes, _ = L.boxes_in_plane(box_layer.data, P.signs_of(box_layer), ref)
            if len(boxes):
                box = boxes[-1]  # the tracker takes one box: the last one drawn
        if len(xy) == 0 and box is None:
            self._clear_preview()
            return None
        data = image.data
        pre = self.preprocessing()
        source, device = self.model_settings()
        holder = self.holder

        def make():
            engine = yield from holder.iter_engine(source, device)
            plane = L.read_plane(data, ref)
            return (
                yield from engine.iter_points(
                    plane,
                    points_xy=xy if len(xy) else None,
                    point_labels=labels if len(xy) else None,
                    box_xyxy=box,
                    multimask=True,
                    preprocessing=pre,
                    rgb=ref.rgb,
                )
            )

        return self.submit(
            make, "SAM3: clicks", "clicks", lambda c: self._on_click_result(c, ref, image)
        )

    def _on_click_result(self, cands: Candidates, ref, image) -> None:
        if not self._image_still_valid(image, ref):
            return
        scores = cands.iou_scores if cands.iou_scores is not None else cands.scores
        best = int(np.nanargmax(scores)) if len(cands) else 0
        self.last_clicks = ClickResult(cands=cands, ref=ref, image=image, index=best)
        self._show_candidate()

    def _candidate_mask(self) -> np.ndarray | None:
        res = self.last_clicks
        if res is None or len(res.cands) == 0:
            return None
        one = res.cands.subset([res.index])
        one = refine_masks(one, self.refine_combo.currentText())
        return one.masks[0]

    def _show_candidate(self) -> None:
        res = self.last_clicks
        mask = self._candidate_mask()
        if res is None or mask is None:
            self._clear_preview()
            return
        data = mask.astype(np.uint8).reshape(res.ref.label_shape())
        scores = res.cands.iou_scores if res.cands.iou_scores is not None else res.cands.scores
        features = {
            "index": [1],
            "candidate": [res.index + 1],
            "iou_score": [float(scores[res.index])],
        }
        created = self.preview_layer is None or self.preview_layer not in self.viewer.layers
        self._ensure_preview_layer(res.ref, data, features)
        clicks, _ = self._prompt_layers(res.image)
        if created and clicks is not None:  # keep clicking without re-selecting the clicks layer
            self.viewer.layers.selection.active = clicks
        self.candidate_label.setText(
            f"Candidate {res.index + 1}/{len(res.cands)}, predicted IoU {float(scores[res.index]):.2f}"
        )

    def _clear_preview(self) -> None:
        self.last_clicks = None
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.data = np.zeros_like(self.preview_layer.data)
        self.candidate_label.setText("No candidate yet: click on the clicks layer.")

    def next_candidate(self) -> None:
        res = self.last_clicks
        if res is None or len(res.cands) == 0:
            return
        res.index = (res.index + 1) % len(res.cands)
        self._show_candidate()

    def target_layer(self, ref: L.PlaneRef, image):
        """The Labels layer commits go into; creates 'SAM3 annotations' (image-sized) if asked."""
        name = self.target_combo.currentText()
        if name and name != NEW_TARGET and name in self.viewer.layers:
            return self.viewer.layers[name]
        existing = f"{ref.layer_name} annotations"
        if existing in self.viewer.layers:
            layer = self.viewer.layers[existing]
        else:
            shape = tuple(L._level0(image.data).shape)
            shape = shape[:-1] if image.rgb else shape
            layer = self.viewer.add_labels(
                np.zeros(shape, np.uint32), name=existing, **L.full_geometry(ref)
            )
        self.refresh_layer_choices()
        self.target_combo.setCurrentText(layer.name)
        return layer

    def commit(self) -> int:
        """Write the shown candidate as a new id into the target layer (undo: Ctrl+Z there)."""
        res = self.last_clicks
        mask = self._candidate_mask()
        if res is None or mask is None:
            self.set_status("Nothing to commit: click on the object first.")
            return 0
        if res.image not in self.viewer.layers:
            notify_info("The image of this candidate was removed; nothing committed.")
            return 0
        try:
            target = self.target_layer(res.ref, res.image)
            new_id = L.commit_mask(target, mask, res.ref)
        except Sam3Error as exc:
            notify_error(exc)
            return 0
        self.set_status(
            f"Committed as label {new_id} in '{target.name}' (Ctrl+Z on that layer undoes it)."
            if new_id
            else "Nothing committed: every pixel of the candidate is already labelled."
        )
        clicks, boxes = self._prompt_layers(res.image)
        self.last_clicks = None
        for layer in (clicks, boxes if self.box_mode_combo.currentIndex() == 1 else None):
            if layer is not None and len(layer.data):
                layer.data = np.zeros((0, layer.ndim)) if layer is clicks else []
        self._click_timer.stop()
        self._clear_preview()
        return new_id
