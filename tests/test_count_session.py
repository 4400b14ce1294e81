"""The Count session without Qt: a napari ViewerModel, the default counter, jobs driven inline."""

import numpy as np
import pandas as pd
from napari.components import ViewerModel

from napari_sam3._napari import layers as L
from napari_sam3._napari.count_session import CountRequest, CountSession
from napari_sam3._napari.engine_holder import EngineHolder
from napari_sam3._napari.plane_run import PlaneRun
from napari_sam3.core.counting.count import count_objects, count_stack
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.testing import InlineSubmit


def _session(image, **kwargs):
    viewer = ViewerModel()
    layer = viewer.add_image(image, name="nuclei", **kwargs)
    session = CountSession(viewer, EngineHolder(), InlineSubmit(), lambda step: step())
    ref = L.plane_ref(layer, viewer.dims.point, viewer.dims.displayed, 2)
    return session, PlaneRun(layer, ref, Preprocessing(), ("unused", "cpu"))


def test_plane_count_layers_summary_and_csv(tmp_path):
    image, _ = synthetic_nuclei((128, 128), seed=3)
    session, run = _session(image, scale=(0.5, 0.5))
    seen = []
    session.events.result.connect(lambda e: seen.append(e.lines))
    session.run_count(run, CountRequest(diameter=18))
    expected = count_objects(image, diameter=18, scale=(0.5, 0.5))
    out = session.last
    assert out.count == expected.count > 0 and out.result.count == expected.count
    assert out.labels_layer in session.viewer.layers and out.points_layer in session.viewer.layers
    assert out.labels_layer.name == "nuclei count (learned)"  # the default counter
    assert len(out.points_layer.data) == len(out.labels_layer.features) == expected.count
    assert seen[-1][0] == f"Total: {expected.count} objects" and "index" not in out.view
    table = pd.read_csv(session.write_csv(tmp_path / "counts.csv"))
    assert len(table) == expected.count and "area_physical" in table


def test_all_slices_offsets_ids_and_a_removed_image_drops_nothing_in():
    planes = [synthetic_nuclei((96, 96), seed=k)[0] for k in range(2)]
    session, run = _session(np.stack(planes))
    session.run_count(run, CountRequest(all_slices=True))
    out = session.last
    # one diameter for the whole stack, as count_stack and the CLI
    assert out.slice_counts == count_stack(np.stack(planes)).plane_counts
    assert out.labels.shape == (2, 96, 96) and out.table["index"].is_unique
    session.viewer.layers.remove(run.image)
    session.run_count(run, CountRequest())
    assert session.last is out  # the new count found no image: dropped, the last one kept


def test_count_csv_is_the_cli_csv(tmp_path):
    """The Count tab's CSV and `napari-sam3 count`'s objects CSV of the same image: same columns,
    same rows (the one objects table, plus the counter's measurements)."""
    import tifffile

    from napari_sam3.cli import main

    image, _ = synthetic_nuclei((128, 128), seed=5)
    session, run = _session(image)
    session.run_count(run, CountRequest(diameter=18))
    gui = pd.read_csv(session.write_csv(tmp_path / "gui.csv"))
    tifffile.imwrite(tmp_path / "img.tif", image)
    args = ["count", str(tmp_path / "img.tif"), "--diameter", "18", "--out", str(tmp_path / "o")]
    assert main([*args, "--no-progress"]) == 0
    cli = pd.read_csv(tmp_path / "o" / "img_objects.csv")
    assert list(gui.columns) == list(cli.columns) and "mean_intensity" in gui
    assert len(gui) == len(cli) > 0
    pd.testing.assert_frame_equal(gui, cli)
