"""The "Segment" tab: text / exemplar / click / box prompts on the current plane -> Labels layers.

Only the widgets and their wiring live here: the tab reads its controls into plain values and calls
`_napari.segment_session.SegmentSession` (text / exemplar runs, re-filter, tracking, propagating
clicks, exemplars used on another image, adapting SAM3; the buttons of the last three are wired in
`propagate_action`, `exemplar_transfer_action`, `adapt_action`) and its
`ClickSession` (clicks, candidates, preview, commit), which hold the run state. Qt-only parts stay
here: the debounce timers, the key bindings' and prompt layers' wiring, labels and combos.
"""

from __future__ import annotations

import weakref

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

from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari import track_result as T
from napari_sam3._napari.click_session import NO_CANDIDATE, ClickResult
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3._napari.segment_session import SegmentSession
from napari_sam3._napari.text_result import TextResult
from napari_sam3._qt import (
    adapt_action,
    exemplar_transfer_action,
    propagate_action,
    review_panel,
)
from napari_sam3._qt.image_choice import fill_combo
from napari_sam3._qt.tab_base import PlaneTab
from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, next_turn, notify_error
from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.refine import REFINEMENT_LEVELS, REFINEMENT_TOOLTIP, filter_candidates

BOX_MODES = ("Exemplars: find all similar objects", "Box prompt: segment the object in the box")


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
        self.session = SegmentSession(viewer, holder, self.submit, self._submit_quick, next_turn)
        self.clicks = self.session.clicks
        self.adder = self.session.adder
        self._refilter_timer = QTimer(self)
        self._refilter_timer.setSingleShot(True)
        self._refilter_timer.setInterval(60)
        self._refilter_timer.timeout.connect(self.apply_filters)
        self._click_timer = QTimer(self)
        self._click_timer.setSingleShot(True)
        self._click_timer.setInterval(40)
        self._click_timer.timeout.connect(self.run_clicks)
        self._wired = weakref.WeakSet()  # prompt/candidate layers whose keys call this tab
        self._build()
        self.clicks.refine = self.refine_combo.currentText()
        self.session.events.status.connect(self._on_session_status)
        self.session.events.result.connect(self._on_session_result)
        self.clicks.events.candidate.connect(self._on_candidate_text)
        self.clicks.events.preview.connect(self._on_preview_created)
        self.clicks.events.target.connect(self._on_target_chosen)
        self.watch_viewer()
        self.image_combo.currentIndexChanged.connect(self._update_track_button)
        self.image_combo.currentIndexChanged.connect(self._refresh_targets)

    # ------------------------------------------------------------------ run state (read-only views)
    @property
    def last_text(self) -> TextResult | None:
        return self.session.last_text

    @property
    def last_clicks(self) -> ClickResult | None:
        return self.clicks.last_clicks

    @property
    def preview_layer(self):
        return self.clicks.preview_layer

    @property
    def last_adapt(self):
        return self.session.last_adapt

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
        propagate_action.add_propagate_controls(self, outer)  # issue 14: clicks through z/t
        review_panel.add_review_button(self, outer)  # issue 14: object review
        adapt_action.add_adapt_button(self, outer)  # issue 20: adapt SAM3 to these results
        exemplar_transfer_action.add_exemplar_transfer_controls(self, outer)  # issue 14

        filt = QGroupBox("Result (re-filtered without calling the model)")
        fform = QFormLayout(filt)
        self.driven_label = QLabel("Controls drive: no result yet (press Enter or Run).")
        self.driven_label.setWordWrap(True)
        self.driven_label.setToolTip(
            "The layer these controls re-filter: the last result. Once you paint into it or "
            "commit a candidate into it, it is yours: it is kept as it is and the next change "
            "here writes a new layer."
        )
        fform.addRow(self.driven_label)
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
        self.hidden_check = QCheckBox("Show objects hidden by overlaps")
        self.hidden_check.setToolTip(
            "Objects covered completely by higher-scoring ones, in an extra layer"
        )
        self.hidden_check.toggled.connect(self._on_filter_changed)
        fform.addRow(self.hidden_check)
        outer.addWidget(filt)

        clicks = QGroupBox("Clicks and box prompt")
        cform = QFormLayout(clicks)
        self.candidate_label = QLabel(NO_CANDIDATE)
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
        self.session.close()

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
        super().refresh_layer_choices()
        self._refresh_targets()
        self._update_track_button()

    def _refresh_targets(self, *args) -> None:
        image = self.image_layer()
        fill_combo(self.target_combo, self.clicks.commit_targets(image.name if image else None))

    def _update_track_button(self, *args) -> None:
        self.track_btn.setEnabled(T.can_track(self.image_layer()))

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(channel=self.images.channel())

    def plane_run(self, image, ref: L.PlaneRef | None = None) -> PlaneRun:
        """What a session run starts from: ``image`` on its plane shown now (or ``ref``), the
        preprocessing and model the controls say (`Sam3Error` when there is no usable plane)."""
        ref = self.current_ref(image) if ref is None else ref
        return PlaneRun(image, ref, self.preprocessing(), self.model_settings())

    def _submit_quick(self, make, desc: str, group: str, on_result, status=None) -> Job:
        """Re-filters: on their own runner, so they never wait behind a model run."""
        job = Job(make=make, desc=desc, group=group, on_result=on_result, on_error=self._on_error)
        return self.post_runner.submit(job, replace_running=True)

    # ------------------------------------------------------------------ session -> widgets
    def _on_session_status(self, event) -> None:
        self.set_status(event.value)

    def _on_session_result(self, event) -> None:
        self.show_driven_layer()
        if event.from_model and event.value.settings != self.filter_settings():
            self._refilter_timer.start()  # a control moved during the run

    def _on_candidate_text(self, event) -> None:
        self.candidate_label.setText(event.value)

    def _on_preview_created(self, event) -> None:
        P.bind_prompt_keys(event.value, None, self.next_candidate, self.commit)
        self._wired.add(event.value)

    def _on_target_chosen(self, event) -> None:
        self.refresh_layer_choices()
        self.target_combo.setCurrentText(event.value.name)

    # ------------------------------------------------------------------ tracking
    def run_track(self) -> Job | None:
        """Track the typed concepts through the stack's slices (see `_napari.track_result`)."""
        image = self.image_layer()
        ref = self.ref_or_notify(image)
        if ref is None:
            return None
        min_score = self.threshold_slider.value() / 100.0
        try:
            return self.session.run_track(
                self.plane_run(image, ref), self.concepts_edit.text(), min_score
            )
        except Sam3Error as exc:  # not a stack, or no usable concept: say what to do
            notify_error(exc)
            return None

    # ------------------------------------------------------------------ prompt layers
    def add_prompt_layers(self):
        """Clicks and boxes layers for the chosen image, with this tab's keys bound."""
        image = self.image_layer()
        ref = self.ref_or_notify(image)
        if ref is None:
            return None, None
        clicks, boxes = self.clicks.add_prompt_layers(image, ref)
        for layer in (clicks, boxes):
            if layer not in self._wired:
                P.bind_prompt_keys(layer, self._on_sign_toggled, self.next_candidate, self.commit)
                layer.events.data.connect(self._on_prompt_data)
                self._watched.append((layer.events.data, self._on_prompt_data))
                self._wired.add(layer)
        self.viewer.layers.selection.active = clicks
        return clicks, boxes

    def toggle_sign(self) -> None:
        sign = self.clicks.toggle_sign(self.image_layer())
        if sign is not None:
            self._on_sign_toggled(sign)

    def _on_sign_toggled(self, sign: str) -> None:
        self.sign_btn.setText(f"Sign: {sign} (N)")

    def _on_prompt_data(self, event=None) -> None:
        # A method (not a lambda) so the prompt layer's data signal holds the tab only weakly.
        action = str(getattr(event, "action", "changed"))
        if action.endswith(("adding", "removing", "changing")):
            return
        source = getattr(event, "source", None)
        role = (source.metadata.get(P.ROLE_KEY) or {}).get("role") if source is not None else None
        if role == "boxes" and self.box_mode_combo.currentIndex() == 0:
            return  # exemplar boxes wait for Run
        self._click_timer.start()  # debounced: one run once the clicking pauses

    # ------------------------------------------------------------------ text / exemplar runs
    def run_text(self) -> Job | None:
        """Run concepts (and exemplar boxes) on the current plane; a new Labels layer results."""
        image = self.image_layer()
        ref = self.ref_or_notify(image)
        if ref is None:
            return None
        exemplars = self.box_mode_combo.currentIndex() == 0
        try:
            return self.session.run_text(
                self.plane_run(image, ref),
                self.concepts_edit.text(),
                exemplars,
                self.filter_settings(),
            )
        except Sam3Error as exc:  # e.g. digits only, or nothing to run: say what SAM3 needs
            notify_error(exc)
            return None

    def filter_settings(self) -> L.FilterSettings:
        """Threshold, min area, refinement and the hidden-objects layer as the controls say now."""
        return L.FilterSettings(
            self.threshold_slider.value() / 100.0,
            self.min_area_spin.value(),
            self.refine_combo.currentText(),
            self.hidden_check.isChecked(),
        )

    def filtered(self, cands: Candidates) -> Candidates:
        """Threshold -> refinement -> min area, all without a model call."""
        s = self.filter_settings()
        return filter_candidates(cands, s.min_score, s.min_area, s.refine)

    def apply_filters(self) -> Job | None:
        """Re-filter the last text result without a model call (see `SegmentSession.refilter`)."""
        return self.session.refilter(self.filter_settings())

    def show_driven_layer(self) -> None:
        """Say which layer the re-filter controls drive (the last result's)."""
        self.driven_label.setText(self.session.driven_text())

    def _on_filter_changed(self, *args) -> None:
        self.threshold_label.setText(f"{self.threshold_slider.value() / 100:.2f}")
        self.clicks.refine = self.refine_combo.currentText()
        self._refilter_timer.start()  # debounced: a slider drag re-filters once it pauses
        if self.clicks.last_clicks is not None:
            self.clicks.show_candidate()

    # ------------------------------------------------------------------ clicks / box prompt
    def run_clicks(self) -> Job | None:
        """Run the tracker head on the clicks (and a box prompt) of the current plane."""
        image = self.image_layer()
        if image is None:
            return None
        ref = self.ref_or_notify(image)
        if ref is None:
            return None
        run = self.plane_run(image, ref)
        box_prompt = self.box_mode_combo.currentIndex() == 1
        return self.clicks.run_clicks(image, ref, box_prompt, run.preprocessing, run.model)

    def _candidate_mask(self):
        return self.clicks.candidate_mask()

    def next_candidate(self) -> None:
        self.clicks.next_candidate()

    def target_layer(self, ref: L.PlaneRef, image):
        """The Labels layer commits go into; creates '<image> annotations' (image-sized) if asked."""
        return self.clicks.target_layer(self.target_combo.currentText(), ref, image)

    def commit(self) -> int:
        """Write the shown candidate as a new id into the target layer (undo: Ctrl+Z there)."""
        clear_boxes = self.box_mode_combo.currentIndex() == 1
        had_candidate = self.clicks.last_clicks is not None
        new_id = self.clicks.commit(self.target_combo.currentText(), clear_boxes)
        if had_candidate and self.clicks.last_clicks is None:
            self._click_timer.stop()  # the cleared prompt layers must not start a run
        return new_id
