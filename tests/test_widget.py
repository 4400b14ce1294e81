"""The Segment tab in a real napari viewer with the tiny checkpoint (run under ``xvfb-run -a``)."""

import numpy as np
import pytest

from napari_sam3._widget import Sam3Widget

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def _image(shape=(64, 80), seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, shape)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    for cy, cx in [(16, 20), (40, 55), (30, 30)]:
        img[..., (yy - cy) ** 2 + (xx - cx) ** 2 < 60] += 120
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture
def sam3(make_napari_viewer, tiny_checkpoint, engine):
    """(viewer, widget, engine): widget docked, model field = tiny checkpoint folder, cpu."""
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    viewer.window.add_dock_widget(widget, name="SAM3")
    tab = widget.segment_tab
    tab.threshold_slider.setValue(10)  # the random tiny model scores about 0.25
    yield viewer, widget, engine
    widget.cleanup()
    widget.runner.wait(30)
    widget.segment_tab.post_runner.wait(30)


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)


def _results(viewer):
    from napari.layers import Labels

    return [
        ly
        for ly in viewer.layers
        if isinstance(ly, Labels) and "·" in ly.name and not ly.name.endswith("(hidden)")
    ]


def test_enter_in_concepts_runs_text_on_the_chosen_image(qtbot, sam3):
    """Wiring only (what a text run makes: test_segment_session.py): Enter runs the typed
    concepts on the chosen image; the result is the layer the re-filter controls drive."""
    viewer, widget, engine = sam3
    viewer.add_image(_image(), name="cells", scale=(0.5, 0.25), translate=(2, 3))
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.concepts_edit.returnPressed.emit()
    _wait(qtbot, widget)
    [layer] = _results(viewer)
    assert layer.name == "nucleus · cells" and tab.last_text.layer is layer
    assert tab.last_text.prompt_text == "nucleus" and len(layer.features) > 0
    assert "'nucleus · cells'" in tab.driven_label.text()
    assert tab.status_label.text().startswith(f"{len(layer.features)} objects")


def test_threshold_and_min_area_refilter_without_model_call(qtbot, sam3):
    viewer, widget, engine = sam3
    viewer.add_image(_image(seed=1), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    _wait(qtbot, widget)
    [layer] = _results(viewer)
    raw = tab.last_text.raw
    before = dict(engine.stats)
    cut = float(np.median(raw.scores))
    tab.threshold_slider.setValue(int(np.ceil(cut * 100)))
    _wait(qtbot, widget)
    thr = tab.threshold_slider.value() / 100
    assert len(layer.features) == int((raw.scores >= thr).sum())
    tab.threshold_slider.setValue(10)
    tab.min_area_spin.setValue(int(np.median(raw.areas)) + 1)
    _wait(qtbot, widget)
    assert len(layer.features) == int((raw.areas >= np.median(raw.areas) + 1).sum())
    tab.refine_combo.setCurrentText("High")
    tab.hidden_check.setChecked(True)
    _wait(qtbot, widget)
    assert engine.stats == before  # no model call for any of it
    assert len(_results(viewer)) == 1  # the same layer was updated
    assert f"{layer.name} (hidden)" in viewer.layers


def test_clicks_buttons_cycle_and_commit_into_the_chosen_layer(qtbot, sam3):
    """Wiring only (candidates and commits: test_segment_session.py): a click runs once the
    clicking pauses, Next / Commit act on the candidate, Commit goes into the chosen layer."""
    viewer, widget, engine = sam3
    viewer.add_image(_image(seed=2), name="cells")
    target = viewer.add_labels(np.zeros((64, 80), np.uint16), name="manual")
    tab = widget.segment_tab
    tab.refresh_layer_choices()
    tab.target_combo.setCurrentText("manual")
    clicks, _ = tab.add_prompt_layers()
    encodes = engine.stats["vision_encodes"]
    clicks.add([16, 20])
    qtbot.waitUntil(lambda: tab.last_clicks is not None, timeout=TIMEOUT)
    _wait(qtbot, widget)
    res = tab.last_clicks
    first = res.index
    assert tab.candidate_label.text().startswith(f"Candidate {first + 1}/3")
    tab.next_btn.click()
    assert res.index == (first + 1) % 3
    assert tab.candidate_label.text().startswith(f"Candidate {res.index + 1}/3")
    tab.commit_btn.click()
    assert (np.asarray(target.data) == 1).any() and len(clicks.data) == 0
    assert tab.status_label.text().startswith("Committed as label 1 in 'manual'")
    # text after clicks on the same image: no re-encode
    tab.concepts_edit.setText("cell")
    tab.run_text()
    _wait(qtbot, widget)
    assert engine.stats["vision_encodes"] <= encodes + 1


def test_sign_toggle_colours_new_clicks(qtbot, sam3):
    viewer, widget, _ = sam3
    viewer.add_image(_image(), name="cells")
    tab = widget.segment_tab
    clicks, _ = tab.add_prompt_layers()
    tab.toggle_sign()
    clicks.add([10, 10])
    assert list(clicks.features["sign"]) == ["negative"]
    np.testing.assert_allclose(clicks.face_color[0], [1, 0, 1, 1])
    assert "negative" in tab.sign_btn.text()
    _wait(qtbot, widget)


def test_cancel_stops_run(qtbot, sam3):
    viewer, widget, engine = sam3
    viewer.add_image(_image(seed=3), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    job = tab.run_text()
    tab.cancel_btn.click()
    _wait(qtbot, widget)
    assert job.state == "aborted"
    assert _results(viewer) == []
    assert tab.status_label.text() == "Cancelled."


def test_remove_image_mid_run_drops_result(qtbot, sam3):
    viewer, widget, _ = sam3
    image = viewer.add_image(_image(seed=4), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    job = tab.run_text()
    viewer.layers.remove(image)
    _wait(qtbot, widget)
    assert job.state in ("returned", "aborted")
    assert _results(viewer) == []


def test_run_twice_latest_wins(qtbot, sam3):
    viewer, widget, _ = sam3
    viewer.add_image(_image(seed=5), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    first = tab.run_text()
    tab.concepts_edit.setText("cell")
    second = tab.run_text()
    _wait(qtbot, widget)
    assert first.state == "aborted" and second.state == "returned"
    assert [ly.name for ly in _results(viewer)] == ["cell · cells"]


def test_nd_run_uses_the_slice_shown(qtbot, sam3):
    """Wiring only (what an nD run and commit write: test_segment_session.py): the tab runs on
    the slice the viewer shows, and commits from there."""
    viewer, widget, engine = sam3
    stack = np.stack([_image(seed=s) for s in range(4)])
    viewer.add_image(stack, name="stack", scale=(3.0, 0.5, 0.5), translate=(1, 0, 0))
    k = 2
    viewer.dims.set_point(0, 1 + 3.0 * k)
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    _wait(qtbot, widget)
    [layer] = _results(viewer)
    assert layer.name == "nucleus [2] · stack" and tab.last_text.ref.index == (k,)
    clicks, _ = tab.add_prompt_layers()
    clicks.add([k, 16, 20])
    qtbot.waitUntil(lambda: tab.last_clicks is not None, timeout=TIMEOUT)
    _wait(qtbot, widget)
    assert tab.last_clicks.ref.index == (k,) and tab.commit() == 1
    assert set(np.nonzero(viewer.layers["stack annotations"].data)[0]) == {k}


def test_rgb_channel_choice(qtbot, sam3):
    viewer, widget, _ = sam3
    rgb = np.stack([_image(seed=6)] * 3, axis=-1)
    viewer.add_image(rgb, name="photo", rgb=True)
    tab = widget.segment_tab
    tab.refresh_layer_choices()
    assert tab.channel_combo.isEnabled() and tab.channel_combo.count() == 4
    tab.channel_combo.setCurrentText("Green")
    assert tab.preprocessing().channel == 1
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    _wait(qtbot, widget)
    [layer] = _results(viewer)
    assert layer.data.shape == (64, 80)


def test_load_error_is_notified_and_widget_stays_usable(qtbot, sam3, tmp_path, monkeypatch):
    viewer, widget, _ = sam3
    errors = []
    monkeypatch.setattr("napari_sam3._qt.segment_tab.notify_error", lambda e: errors.append(e))
    monkeypatch.setattr("napari_sam3._qt.tab_base.notify_error", lambda e: errors.append(e))
    monkeypatch.setattr("napari_sam3._widget.notify_error", lambda e: errors.append(e))
    good = widget.model_edit.text()
    widget.model_edit.setText(str(tmp_path / "no-such-model"))
    viewer.add_image(_image(), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    _wait(qtbot, widget)
    assert len(errors) == 1
    assert "no-such-model" in str(errors[0]) and "hf auth login" in str(errors[0])
    assert "hf auth login" in tab.status_label.text()
    assert _results(viewer) == []
    widget.model_edit.setText(good)
    tab.run_text()
    _wait(qtbot, widget)
    assert len(_results(viewer)) == 1


def test_close_widget_mid_run(qtbot, sam3):
    viewer, widget, _ = sam3
    viewer.add_image(_image(seed=7), name="cells")
    tab = widget.segment_tab
    tab.concepts_edit.setText("nucleus")
    tab.run_text()
    widget.close()
    _wait(qtbot, widget)
    assert _results(viewer) == []
    assert tab.run_text() is None or widget.runner.idle


def test_exemplar_boxes_then_box_prompt(qtbot, sam3):
    viewer, widget, engine = sam3
    viewer.add_image(_image(seed=8), name="cells")
    tab = widget.segment_tab
    clicks, boxes = tab.add_prompt_layers()
    rect = np.array([[10, 14], [10, 26], [22, 26], [22, 14]])
    boxes.add_rectangles(rect)  # exemplar mode (default): waits for Run
    _wait(qtbot, widget)
    assert tab.last_clicks is None
    tab.concepts_edit.setText("")
    tab.run_text()
    _wait(qtbot, widget)
    [layer] = _results(viewer)
    assert layer.name == "exemplars · cells"
    assert set(layer.features["kind"]) <= {"exemplar"}
    # the same rectangle as a box prompt around one object -> 3 tracker candidates
    tab.box_mode_combo.setCurrentIndex(1)
    boxes.add_rectangles(rect + 30)
    qtbot.waitUntil(lambda: tab.last_clicks is not None, timeout=TIMEOUT)
    _wait(qtbot, widget)
    assert tab.last_clicks.cands.kind == "box" and len(tab.last_clicks.cands) == 3


def test_shortcuts_on_prompt_and_candidate_layers(qtbot, sam3):
    from app_model.types import KeyBinding

    from napari_sam3._napari import prompt_layers as P

    viewer, widget, _ = sam3
    viewer.add_image(_image(seed=9), name="cells")
    tab = widget.segment_tab
    clicks, boxes = tab.add_prompt_layers()
    for layer in (clicks, boxes, tab.preview_layer):
        for key in ("C", "K") + (("N",) if layer is not tab.preview_layer else ()):
            assert KeyBinding.from_str(key) in layer.keymap, (layer.name, key)
    clicks.keymap[KeyBinding.from_str("N")](clicks)
    assert P.current_sign(clicks) == "negative" and "negative" in tab.sign_btn.text()
    clicks.keymap[KeyBinding.from_str("N")](clicks)
    clicks.add([16, 20])
    qtbot.waitUntil(lambda: tab.last_clicks is not None, timeout=TIMEOUT)
    _wait(qtbot, widget)
    first = tab.last_clicks.index
    clicks.keymap[KeyBinding.from_str("C")](clicks)
    assert tab.last_clicks.index == (first + 1) % 3
    clicks.keymap[KeyBinding.from_str("K")](clicks)
    assert viewer.layers["cells annotations"].data.max() == 1


def test_model_field_defaults_to_env(make_napari_viewer, tiny_model_env):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    assert widget.model_edit.text() == str(tiny_model_env)
    assert widget.model_settings() == (str(tiny_model_env), "auto")
    assert "not loaded" in widget.model_status.text()
    widget.cleanup()


def test_reopened_widget_rewires_prompt_layers(qtbot, sam3):
    from app_model.types import KeyBinding

    viewer, widget, _ = sam3
    viewer.add_image(_image(seed=10), name="cells")
    clicks, _ = widget.segment_tab.add_prompt_layers()
    widget.cleanup()
    assert KeyBinding.from_str("C") not in clicks.keymap
    second = Sam3Widget(viewer)
    second.model_edit.setText(widget.model_edit.text())
    second.device_combo.setCurrentText("cpu")
    again, _ = second.segment_tab.add_prompt_layers()
    assert again is clicks and KeyBinding.from_str("C") in clicks.keymap
    clicks.add([16, 20])
    qtbot.waitUntil(lambda: second.segment_tab.last_clicks is not None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: second.idle, timeout=TIMEOUT)
    second.cleanup()


def test_removed_dock_widget_leaves_viewer_working(qtbot, make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = Sam3Widget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="SAM3")
    viewer.add_image(_image(seed=11), name="cells")
    widget.segment_tab.concepts_edit.setText("nucleus")
    widget.model_edit.setText(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    widget.segment_tab.run_text()
    viewer.window.remove_dock_widget(dock)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: widget.runner.idle, timeout=TIMEOUT)
    viewer.add_image(_image(seed=12), name="more")  # layer events must not reach a dead widget
    viewer.layers.remove("more")
    assert _results(viewer) == []


def test_opens_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam3", "SAM3")
    assert isinstance(widget, Sam3Widget)
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == ["Segment", "Count"]
    viewer.window.remove_dock_widget(dock)
    assert widget._closed
