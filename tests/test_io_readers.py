"""Readers: planes of stacks with indices and names; clear errors for bad files."""

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_sam3 import Sam3Error
from napari_sam3.io import expand_inputs, iter_planes, read_image
from napari_sam3.io.readers import count_planes


def test_plain_gray_tiff_one_plane_with_scale(tmp_path):
    img = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    tifffile.imwrite(
        tmp_path / "a.tif", img, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"}
    )
    (plane,) = list(iter_planes(tmp_path / "a.tif"))
    np.testing.assert_array_equal(plane.data, img)
    assert plane.stem == "a" and plane.index == () and not plane.rgb
    assert plane.scale == pytest.approx((0.5, 0.5))


def test_stack_yields_named_planes(tmp_path):
    st = np.random.default_rng(0).integers(0, 255, (12, 16, 20)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", st, metadata={"axes": "ZYX"})
    planes = list(iter_planes(tmp_path / "s.tif"))
    assert [p.stem for p in planes][:3] == ["s_z000", "s_z001", "s_z002"]
    assert planes[11].index == (11,) and planes[11].slice_label == "z=11"
    np.testing.assert_array_equal(planes[5].data, st[5])
    assert count_planes(tmp_path / "s.tif") == 12


def test_multi_axis_ome_and_rgb(tmp_path):
    data = np.zeros((2, 3, 16, 20), np.uint16)
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        data,
        metadata={"axes": "TZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3},
    )
    planes = list(iter_planes(tmp_path / "o.ome.tif"))
    assert len(planes) == 6 and planes[4].stem == "o_t001_z001"
    assert planes[0].scale == pytest.approx((0.3, 0.3))
    rgb = np.zeros((16, 20, 3), np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    iio.imwrite(tmp_path / "j.jpg", rgb)
    tifffile.imwrite(tmp_path / "c.tif", rgb)
    for name in ("c.png", "j.jpg", "c.tif"):
        (p,) = list(iter_planes(tmp_path / name))
        assert p.rgb and p.data.shape == (16, 20, 3)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.tif", b"", "empty"),
        ("empty.png", b"", "empty"),
        ("text.tif", b"hello, not a tiff" * 10, "not a readable TIFF"),
        ("text.png", b"hello, not a png" * 10, "not a readable PNG"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(Sam3Error, match=match):
        list(iter_planes(tmp_path / name))


def test_truncated_and_unsupported_dims(tmp_path):
    good = tmp_path / "g.tif"
    tifffile.imwrite(good, np.ones((64, 64), np.uint16), compression="zlib")
    data = good.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(Sam3Error):
        list(iter_planes(tmp_path / "cut.tif"))
    tifffile.imwrite(tmp_path / "line.tif", np.ones((1, 50), np.uint8))
    planes = list(iter_planes(tmp_path / "line.tif"))  # 1x50 is 2-D; the model rejects it later
    assert planes[0].data.shape == (1, 50)
    with pytest.raises(Sam3Error):
        read_image(tmp_path / "missing.tif")


def test_expand_inputs_files_folders_globs(tmp_path):
    for n in ("b.tif", "a.png", "c.jpeg", "skip.txt", ".hidden.tif"):
        (tmp_path / n).write_bytes(b"x")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.tiff").write_bytes(b"x")
    files, problems = expand_inputs(
        [
            tmp_path,
            str(sub / "*.tiff"),
            tmp_path / "b.tif",
            tmp_path / "nope.tif",
            str(tmp_path / "zz*.tif"),
        ]
    )
    assert [f.name for f in files] == ["a.png", "b.tif", "c.jpeg", "d.tiff"]  # no duplicates
    assert [p[0] for p in problems] == [str(tmp_path / "nope.tif"), str(tmp_path / "zz*.tif")]


def test_plane_stems_from_the_header_match_the_planes(tmp_path):
    import tifffile

    from napari_sam3.io.readers import iter_planes, plane_stems

    cases = {
        "zyx.tif": (np.zeros((3, 8, 9), np.uint8), {"axes": "ZYX"}),
        "tzyx.tif": (np.zeros((2, 3, 8, 9), np.uint8), {"axes": "TZYX"}),
        "rgb.tif": (np.zeros((8, 9, 3), np.uint8), {"axes": "YXS"}),
        "plain.tif": (np.zeros((8, 9), np.uint16), {"axes": "YX"}),
        "one.tif": (np.zeros((1, 8, 9), np.uint8), {"axes": "ZYX"}),
    }
    for name, (data, meta) in cases.items():
        tifffile.imwrite(tmp_path / name, data, metadata=meta)
        planes = [p.stem for p in iter_planes(tmp_path / name, base="b")]
        assert plane_stems(tmp_path / name, "b") == planes, name
    assert plane_stems(tmp_path / "missing.tif", "m") == ["m"]
