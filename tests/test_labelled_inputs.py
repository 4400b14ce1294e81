"""batch.labelled_inputs: the one reader of image + labels folders for ``train`` and ``adapt``."""

import numpy as np
import pytest
import tifffile

from napari_sam3.batch.adapt_inputs import collect_examples
from napari_sam3.batch.labelled_inputs import labelled_inputs
from napari_sam3.batch.train import labelled_planes
from napari_sam3.core.errors import Sam3Error


@pytest.fixture
def folders(tmp_path):
    """Three images, labels for two of them (one as a single-plane stack)."""
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    for i in range(3):
        tifffile.imwrite(images / f"a{i}.tif", np.full((32, 40), i, np.uint16))
    tifffile.imwrite(labels / "a0_labels.tif", np.ones((32, 40), np.uint16))
    tifffile.imwrite(labels / "a1_labels.tif", np.full((1, 32, 40), 2, np.uint16))
    return images, labels


def test_train_leaves_out_unlabelled_planes_adapt_refuses_them(folders):
    images, labels = folders
    planes = labelled_planes([images], labels)
    assert [p.name for p in planes] == ["a0.tif:a0", "a1.tif:a1"]
    assert planes[1].labels.shape == (32, 40) and planes[1].labels.max() == 2
    assert planes[1].image.shape == (32, 40) and planes[1].image.max() == 1
    with pytest.raises(Sam3Error, match="a2_labels.tif is missing"):
        collect_examples([images], labels)
    (images / "a2.tif").unlink()
    examples = collect_examples([images], labels)
    assert [e.name for e in examples] == ["a0", "a1"]
    assert examples[0].labels.dtype == np.int64 and examples[0].rejected is None


@pytest.mark.parametrize("every_plane", [False, True])
def test_both_commands_get_the_same_messages(folders, tmp_path, every_plane):
    images, labels = folders
    with pytest.raises(Sam3Error, match="no such folder"):
        labelled_inputs([images], tmp_path / "nowhere", every_plane=every_plane)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Sam3Error, match="empty: folder holds no .tif"):
        labelled_inputs([empty], labels, every_plane=every_plane)
    # a labels folder without any of the images' labels
    fix = "a0_labels.tif is missing" if every_plane else "No labels found in .*a0_labels.tif, a1"
    with pytest.raises(Sam3Error, match=fix):
        labelled_inputs([images], empty, every_plane=every_plane)
    tifffile.imwrite(labels / "a0_labels.tif", np.ones((2, 32, 40), np.uint16))
    with pytest.raises(Sam3Error, match="a0_labels.tif is not a 2-D label image"):
        labelled_inputs([images], labels, every_plane=every_plane)
