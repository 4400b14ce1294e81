"""Exemplars drawn on image A used on image B (engine.exemplar_prompt / segment_with), tiny model.

Parity: on A itself the transferred tokens must give exactly the ordinary exemplar call (which
tests/test_parity.py checks against Sam3Processor). On B they must differ from pasting A's box
coordinates onto B, the wrong thing the CLI's ``--exemplar`` did for other images.
"""

import numpy as np
import pytest

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.sam3.exemplar_prompt import ExemplarPrompt, merge_prompts

BOXES = [[10, 10, 30, 30], [40, 5, 60, 20]]
LABELS = [1, 0]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4000, (60, 80)).astype(np.uint16)
    a[10:30, 10:30] += 30000
    b = rng.integers(0, 4000, (60, 80)).astype(np.uint16)
    b[30:50, 45:65] += 30000  # a similar bright object elsewhere
    return a, b


def _same(x, y):
    assert len(x) == len(y) > 0
    np.testing.assert_array_equal(x.scores, y.scores)
    np.testing.assert_array_equal(x.boxes, y.boxes)
    np.testing.assert_array_equal(x.masks, y.masks)
    assert list(x.prompts) == list(y.prompts)


@pytest.mark.parametrize("text", [None, "cell, nucleus"])
def test_on_the_source_image_it_is_the_ordinary_exemplar_call(engine, images, text):
    a, _ = images
    ordinary = engine.segment_exemplars(a, BOXES, LABELS, text=text, min_score=0.0)
    prompt = engine.exemplar_prompt(a, BOXES, LABELS, text=text)
    assert prompt.n_boxes == 2
    assert prompt.geometry.shape[:2] == (1 if text is None else 2, 3)  # boxes + CLS token
    _same(engine.segment_with(a, prompt, min_score=0.0), ordinary)


def test_on_another_image_it_is_not_the_same_coordinates(engine, images):
    a, b = images
    prompt = engine.exemplar_prompt(a, BOXES, LABELS)
    transferred = engine.segment_with(b, prompt, min_score=0.0)
    pasted = engine.segment_exemplars(b, BOXES, LABELS, min_score=0.0)
    assert len(transferred) > 0
    assert set(transferred.prompts) == {"exemplar"}
    assert transferred.meta["exemplar_source"] == prompt.source_key
    assert not np.allclose(np.sort(transferred.scores), np.sort(pasted.scores))


def test_target_costs_one_encode_and_one_detector_pass(engine, images):
    a, b = images
    prompt = engine.exemplar_prompt(a, BOXES, LABELS)
    engine.clear_cache()
    engine.reset_stats()
    engine.segment_with(b, prompt)
    engine.segment_with(b, prompt)  # B is cached now
    assert engine.stats["vision_encodes"] == 1
    assert engine.stats["detector_calls"] == 2


def test_boxes_on_the_target_are_added(engine, images):
    a, b = images
    from_a = engine.exemplar_prompt(a, BOXES[:1])
    from_b = engine.exemplar_prompt(b, [[45, 30, 65, 50]])
    both = merge_prompts([from_a, from_b])
    assert both.n_boxes == 2 and both.geometry.shape[1] == 4  # two CLS tokens, two boxes
    direct = engine.segment_with(b, both, min_score=0.0)
    _same(engine.segment_with(b, from_a, boxes_xyxy=[[45, 30, 65, 50]], min_score=0.0), direct)


def test_refuses_another_models_prompt_and_bad_input(engine, images):
    a, b = images
    prompt = engine.exemplar_prompt(a, BOXES[:1])
    foreign = ExemplarPrompt(**{**prompt.__dict__, "model_key": "another model"})
    with pytest.raises(Sam3Error, match="another model"):
        engine.segment_with(b, foreign)
    with pytest.raises(Sam3Error, match="exemplar prompt"):
        engine.segment_with(b, [[1, 2, 3, 4]])
    with pytest.raises(Sam3Error, match="positive"):
        engine.exemplar_prompt(a, BOXES[:1], [0])
    with pytest.raises(Sam3Error, match="same text"):
        merge_prompts([prompt, engine.exemplar_prompt(a, BOXES[:1], text="cell")])


def test_exemplar_from_option(engine, images, tmp_path):
    """``--exemplar-from IMAGE:X0,Y0,X1,Y1`` (batch.exemplar_from): parse, encode once, reuse."""
    import tifffile

    from napari_sam3.batch.exemplar_from import exemplar_prompt_from, parse_exemplar_from

    a, b = images
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, a)
    sources = parse_exemplar_from([f"{ref}:10,10,30,30;40,5,60,20"])
    assert sources[0].boxes == ((10, 10, 30, 30), (40, 5, 60, 20))
    prompt = exemplar_prompt_from(engine, sources)
    assert exemplar_prompt_from(engine, sources) is prompt  # once per process
    direct = engine.exemplar_prompt(a, BOXES)
    _same(
        engine.segment_with(b, prompt, min_score=0.0), engine.segment_with(b, direct, min_score=0.0)
    )
    assert len(sources[0].fingerprint()) == 16
    for bad, message in [
        ("ref.tif", "IMAGE:X0,Y0,X1,Y1"),
        (f"{ref}:1,2,3", "4 numbers"),
        (f"{tmp_path / 'missing.tif'}:1,2,3,4", "does not exist"),
    ]:
        with pytest.raises(Sam3Error, match=message):
            parse_exemplar_from(bad)
