"""core.images: any napari plane -> the uint8 RGB picture SAM3 sees, or a Sam3Error with the fix."""

import numpy as np
import pytest

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.images import (
    Preprocessing,
    channel_axis,
    content_hash,
    to_model_rgb,
    validate_plane,
)


def test_uint8_rgb_passes_through_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = to_model_rgb(rgb)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb)


def test_uint8_gray_is_repeated_to_rgb():
    gray = np.arange(400, dtype=np.uint8).reshape(20, 20)
    out = to_model_rgb(gray)
    assert out.shape == (20, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_uint16_hot_pixels_do_not_flatten_contrast():
    rng = np.random.default_rng(1)
    plane = rng.normal(1000, 20, (64, 64)).astype(np.uint16)
    plane[20:40, 20:40] = 1400  # the object
    plane[0, :3] = 65535  # hot pixels
    out = to_model_rgb(plane)[..., 0]
    assert out.dtype == np.uint8
    # the object is near white, the background spread over the range, not crushed to black
    assert out[25:35, 25:35].mean() > 240
    assert 20 < out[45:, 45:].mean() < 200
    naive = (plane / 65535 * 255).astype(np.uint8)
    assert naive[25:35, 25:35].mean() < 10  # what a min/max mapping would have given


def test_float_with_nan_and_inf():
    plane = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    plane[0, 0] = np.nan
    plane[0, 1] = np.inf
    plane[0, 2] = -np.inf
    out = to_model_rgb(plane)[..., 0]
    assert out[0, 0] == 0 and out[0, 1] == 255 and out[0, 2] == 0
    assert out[16, 16] > 100
    assert out.max() == 255


def test_constant_plane_is_black_not_an_error():
    out = to_model_rgb(np.full((16, 16), 7.0))
    assert out.shape == (16, 16, 3) and out.max() == 0


def test_rgba_drops_alpha():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 17
    out = to_model_rgb(rgba)
    assert out.shape == (16, 16, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_uint16_rgb_scaled_per_channel():
    rgb = np.zeros((16, 16, 3), np.uint16)
    rgb[..., 0] = np.arange(256).reshape(16, 16)
    rgb[..., 1] = np.arange(256).reshape(16, 16) * 100
    out = to_model_rgb(rgb)
    assert out[..., 0].max() == 255 and out[..., 1].max() == 255


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_channel_choice(layout):
    chans = np.stack([np.full((16, 20), v, np.uint16) for v in (1, 2, 3, 4, 5)])
    chans[2, :8] = 1000  # channel 2 has structure
    data = chans if layout == "CHW" else np.moveaxis(chans, 0, -1)
    assert channel_axis(data) == (0 if layout == "CHW" else -1)
    out = to_model_rgb(data, Preprocessing(channel=2))
    assert out.shape == (16, 20, 3)
    assert out[:8].min() == 255 and out[8:].max() == 0
    with pytest.raises(Sam3Error, match="choose one channel"):
        to_model_rgb(data)
    with pytest.raises(Sam3Error, match="Channel 9 does not exist"):
        to_model_rgb(data, Preprocessing(channel=9))


def test_channel_of_an_rgb_image():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 99
    out = to_model_rgb(rgb, Preprocessing(channel=1))
    assert out.shape == (16, 16, 3) and (out == 99).all()  # uint8 gray passes unchanged


def test_rgb_flag_on_a_2d_plane_is_ignored():
    gray = np.arange(400, dtype=np.uint8).reshape(20, 20)
    np.testing.assert_array_equal(to_model_rgb(gray, rgb=True), to_model_rgb(gray))


def test_rgb_flag_with_wrong_channel_count():
    with pytest.raises(Sam3Error, match="RGB"):
        to_model_rgb(np.zeros((16, 16, 5), np.uint8), rgb=True)


def test_bool_plane_is_visible():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    out = to_model_rgb(mask)
    assert out.max() == 255


def test_percentiles_change_the_picture():
    plane = np.random.default_rng(2).normal(0, 1, (32, 32))
    a = to_model_rgb(plane, Preprocessing(percentiles=(0.5, 99.8)))
    b = to_model_rgb(plane, Preprocessing(percentiles=(10, 90)))
    assert not np.array_equal(a, b)
    assert Preprocessing() == Preprocessing(percentiles=(0.5, 99.8), channel=None)  # hashable key
    assert hash(Preprocessing()) == hash(Preprocessing())


@pytest.mark.parametrize(
    "plane, match",
    [
        (np.zeros((1, 1)), "at least"),
        (np.zeros((4, 100)), "at least"),
        (np.zeros(50), "at least"),
        (np.zeros((2, 3, 4, 16, 16)), "one 2-D plane"),
        (np.zeros((30, 64, 64)), "one 2-D plane"),
        (np.full((16, 16), np.nan), "no finite values"),
        (np.full((16, 16), np.inf), "no finite values"),
        (np.ones((16, 16), complex), "complex"),
        (np.array([["a"] * 16] * 16), "numeric"),
        (np.empty((16, 16), object), "numeric"),
    ],
    ids=["1x1", "thin", "1-D", "5-D", "z-stack", "all-NaN", "all-inf", "complex", "str", "object"],
)
def test_bad_planes_raise_with_a_message(plane, match):
    with pytest.raises(Sam3Error, match=match):
        validate_plane(plane)
    with pytest.raises(Sam3Error):
        to_model_rgb(plane)


def test_content_hash():
    a = np.arange(100, dtype=np.uint16).reshape(10, 10)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(a.astype(np.uint8))  # dtype is part of it
    assert content_hash(a) != content_hash(a.reshape(20, 5))  # shape too
    assert content_hash(a.T) == content_hash(np.ascontiguousarray(a.T))  # views work
    b = a.copy()
    b[3, 3] += 1
    assert content_hash(a) != content_hash(b)
