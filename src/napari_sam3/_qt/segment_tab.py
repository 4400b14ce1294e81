"""The "Segment" tab: text / exemplar / click / box prompts on the current plane -> Labels layers.

Only the widgets and their wiring live here; each flow has its own module taking the tab: the text /
exemplar run and its re-filter in `_text_flow`, the click / box-prompt candidates in `_click_flow`,
tracking in `_track_action`. Everything a run needs is captured when it starts (image layer object,
plane index, geometry), so a result lands where the user asked even if the view moved, and is
dropped with a notification if the image was removed.
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

from napari_sam3._napari import layer_builder as B
from napari_sam3._napari import layers as L
from napari_sam3._napari import prompt_layers as P
from napari_sam3._napari.text_result import TextResult
from napari_sam3._qt import (
    click_flow,
    exemplar_transfer_action,
    propagate_action,
    review_panel,
    text_flow,
)
from napari_sam3._qt import track_action as T
from napari_sam3._qt.click_flow import NEW_TARGET, ClickResult
from napari_sam3._qt.image_choice import fill_combo, layers_of
from napari_sam3._qt.tab_base import PlaneTab
from napari_sam3._qt.worker import EngineHolder, Job, JobRunner, next_turn, notify_info
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
        self.adder = B.LayerAdder(
            viewer, next_turn
        )  # result layers: one napari layer add per event-loop turn
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
        propagate_action.add_propagate_controls(self, outer)  # issue 14: clicks through z/t
        review_panel.add_review_button(self, outer)  # issue 14: object review
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
        """Clicks and boxes layers for the chosen image (see `_click_flow`)."""
        return click_flow.add_prompt_layers(self)

    def toggle_sign(self) -> None:
        click_flow.toggle_sign(self)

    def _on_sign_toggled(self, sign: str) -> None:
        self.sign_btn.setText(f"Sign: {sign} (N)")

    def _on_prompt_data(self, event=None) -> None:
        # A method (not a lambda) so the prompt layer's data signal holds the tab only weakly.
        click_flow.on_prompt_data(self, event)

    # ------------------------------------------------------------------ text / exemplar runs
    def run_text(self) -> Job | None:
        """Run concepts (and exemplar boxes) on the current plane (see `_text_flow`)."""
        return text_flow.run_text(self)

    def _image_still_valid(self, image, ref: L.PlaneRef) -> bool:
        """Whether a finished run's image is still in the viewer with the shape it ran on."""
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
        """Re-filter the last text result without a model call (see `_text_flow`)."""
        return text_flow.apply_filters(self)

    def show_driven_layer(self) -> None:
        """Say which layer the re-filter controls drive (the last result's)."""
        res = self.last_text
        name = res.layer.name if res is not None and res.layer is not None else None
        text = f"Controls drive: '{name}'" if name else "Controls drive: no result yet."
        kept = [ly.name for ly in (res.kept if res is not None else []) if ly in self.viewer.layers]
        if kept:
            text += "\nKept as you edited them: " + ", ".join(f"'{k}'" for k in kept)
        self.driven_label.setText(text)

    def _on_filter_changed(self, *args) -> None:
        self.threshold_label.setText(f"{self.threshold_slider.value() / 100:.2f}")
        self._refilter_timer.start()  # debounced: a slider drag re-filters once it pauses
        if self.last_clicks is not None:
            click_flow.show_candidate(self)

    # ------------------------------------------------------------------ clicks / box prompt
    def run_clicks(self) -> Job | None:
        """Run the tracker head on the clicks (and a box prompt) of the current plane."""
        return click_flow.run_clicks(self)

    def _candidate_mask(self):
        return click_flow.candidate_mask(self)

    def next_candidate(self) -> None:
        click_flow.next_candidate(self)

    def target_layer(self, ref: L.PlaneRef, image):
        """The Labels layer commits go into; creates 'SAM3 annotations' (image-sized) if asked."""
        return click_flow.target_layer(self, ref, image)

    def commit(self) -> int:
        """Write the shown candidate as a new id into the target layer (undo: Ctrl+Z there)."""
        return click_flow.commit(self)
