"""Counting: classical accuracy on synthetic nuclei, measurements, bad input, stacks, progress,
and the SAM3 path (tiling, exemplar strips, de-duplication) with a ground-truth engine and with the
tiny random checkpoint."""

import threading

import numpy as np
import pandas as pd
import pytest

from napari_sam3.core.classical.diameter import estimate_diameter
from napari_sam3.core.classical.resolution import block_mean, upsample_labels
from napari_sam3.core.counting.count import CountResult, count_objects, count_stack, iter_count
from napari_sam3.core.counting.tiling import tile_grid
from napari_sam3.core.errors import Cancelled, Sam3Error
from napari_sam3.core.progress import Progress, run_to_end
from napari_sam3.core.results.candidates import Candidates
from napari_sam3.core.results.measure import count_distinct, match_labels, measure_labels
from napari_sam3.core.synthetic import synthetic_nuclei
from napari_sam3.io.tables import write_table_csv


@pytest.fixture(scope="module")
def nuclei():
    return synthetic_nuclei((256, 256), seed=11, diameter=16, coverage=0.5, touching=0.75)


@pytest.fixture(scope="module")
def counted(nuclei):
    return count_objects(nuclei[0], "classical")


# ------------------------------------------------------------------------------ classical
def test_classical_counts_dense_touching_nuclei(nuclei, counted):
    img, gt = nuclei
    m = match_labels(gt, counted.labels)
    assert m["f1"] >= 0.88, m
    # Seeds keep half a diameter apart (real textured nuclei were split in pieces at a fifth):
    # the synthetic generator's overlapping pairs, centres closer than that, count as one.
    assert abs(m["count_error"]) <= 0.11, m
    assert counted.method == "classical" and counted.counts == {"classical": counted.count}
    assert counted.labels.shape == img.shape
    assert counted.meta["polarity"] == "bright"


def test_count_is_distinct_labels_not_max(counted):
    assert counted.count == len(np.unique(counted.labels)) - 1 == len(counted.table)
    gappy = np.zeros((10, 10), np.int32)
    gappy[1, 1], gappy[3, 3], gappy[5, 5] = 1, 7, 40
    assert count_distinct(gappy) == 3
    assert count_distinct(np.zeros((4, 4), np.uint16)) == 0


def test_estimate_diameter_close_to_truth(nuclei):
    img, gt = nuclei
    truth = np.median(measure_labels(gt)["equivalent_diameter"])
    assert estimate_diameter(img) == pytest.approx(truth, rel=0.2)


def test_uneven_illumination_and_low_light():
    img, gt = synthetic_nuclei((256, 256), seed=3, illumination=0.8, photons=80)
    m = match_labels(gt, count_objects(img, "classical").labels)
    assert m["f1"] >= 0.8 and abs(m["count_error"]) <= 0.15, m


def test_dark_objects_on_bright_background(nuclei):
    img, gt = nuclei
    inverted = (65535 - img).astype(np.uint16)
    res = count_objects(inverted, "classical")
    assert res.meta["polarity"] == "dark"
    assert match_labels(gt, res.labels)["f1"] >= 0.85


def test_large_image_works_at_reduced_resolution():
    img, gt = synthetic_nuclei((384, 384), seed=2, diameter=40, coverage=0.4)
    res = count_objects(img, "classical")
    assert res.meta["work_factor"] >= 3  # objects processed at ~10 px across
    assert res.labels.shape == img.shape
    assert match_labels(gt, res.labels)["f1"] >= 0.85


def test_diameter_far_from_measured_warns(nuclei):
    res = count_objects(nuclei[0], "classical", diameter=70)
    assert any("far from the measured" in w for w in res.warnings)
    assert not any(
        "far from" in w for w in count_objects(nuclei[0], "classical", diameter=16).warnings
    )


def test_exclude_border_and_size_filter(nuclei):
    res = count_objects(nuclei[0], "classical", exclude_border=True)
    lab = res.labels
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    assert not edge.any()
    assert 0 < res.count < count_objects(nuclei[0], "classical").count
    big = count_objects(nuclei[0], "classical", min_size=300)
    assert big.count < res.count + 40 and (big.table["area"] >= 300 * 0.9).all()


# ------------------------------------------------------------------------------ measurements
def test_table_matches_regionprops_and_units(nuclei, counted):
    from skimage.measure import regionprops_table

    img, _ = nuclei
    res = count_objects(img, "classical", scale=(0.5, 0.25))
    t = res.table
    rp = regionprops_table(
        res.labels,
        intensity_image=img,
        properties=(
            "label",
            "area",
            "centroid",
            "bbox",
            "intensity_mean",
            "intensity_max",
            "eccentricity",
            "equivalent_diameter_area",
        ),
    )
    pairs = {
        "label": "label",
        "area": "area",
        "centroid_y": "centroid-0",
        "centroid_x": "centroid-1",
        "bbox_y0": "bbox-0",
        "bbox_x0": "bbox-1",
        "bbox_y1": "bbox-2",
        "bbox_x1": "bbox-3",
        "mean_intensity": "intensity_mean",
        "max_intensity": "intensity_max",
        "eccentricity": "eccentricity",
        "equivalent_diameter": "equivalent_diameter_area",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(t[ours], rp[theirs], rtol=1e-6, atol=1e-6, err_msg=ours)
    assert t["score"].isna().all() and set(t["prompt"]) == {"classical"}
    np.testing.assert_allclose(t["area_physical"], t["area"] * 0.125)
    np.testing.assert_allclose(t["centroid_x_physical"], t["centroid_x"] * 0.25)
    assert "area_physical" not in counted.table


def test_blocked_measurement_is_exact_at_odd_sizes():
    from skimage.measure import regionprops_table

    img, gt = synthetic_nuclei((101, 77), seed=1, diameter=12)
    small = gt[::3, ::3].copy()
    full = upsample_labels(small, 3, img.shape)
    t = measure_labels(full, img, work_labels=small, work_factor=3)
    rp = regionprops_table(
        full,
        intensity_image=img,
        properties=("area", "centroid", "bbox", "intensity_mean", "intensity_max", "eccentricity"),
    )
    for ours, theirs in [
        ("area", "area"),
        ("centroid_y", "centroid-0"),
        ("bbox_y1", "bbox-2"),
        ("bbox_x1", "bbox-3"),
        ("mean_intensity", "intensity_mean"),
        ("max_intensity", "intensity_max"),
        ("eccentricity", "eccentricity"),
    ]:
        np.testing.assert_allclose(t[ours], rp[theirs], rtol=1e-6, atol=1e-6, err_msg=ours)
    bm = block_mean(img.astype(np.float32), 3)
    assert bm[-1, -1] == pytest.approx(img[99:, 75:].mean(), rel=1e-5)  # edge block: own pixels


def test_match_labels_counts_tp_fp_fn():
    gt = np.zeros((20, 20), int)
    gt[2:6, 2:6], gt[10:14, 10:14] = 1, 2
    pred = np.zeros_like(gt)
    pred[2:6, 2:7] = 5  # IoU 16/20 with gt 1
    pred[16:18, 16:18] = 9  # false positive
    m = match_labels(gt, pred)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert m["f1"] == pytest.approx(0.5) and m["count_error"] == 0.0
    assert match_labels(gt, gt)["f1"] == 1.0


def test_write_table_csv_roundtrip(tmp_path, counted):
    path = write_table_csv(tmp_path / "sub" / "counts.csv", counted.table)
    back = pd.read_csv(path)
    assert len(back) == counted.count
    assert list(back.columns) == list(counted.table.columns)
    with pytest.raises(Sam3Error, match="already exists"):
        write_table_csv(path, counted.table)
    write_table_csv(path, counted.table.iloc[:1], overwrite=True)
    assert len(pd.read_csv(path)) == 1


def test_measure_columns_are_the_shared_ones(counted):
    from napari_sam3.core.results.columns import MEASURE_COLUMNS, PHYSICAL_COLUMNS

    assert tuple(counted.table.columns[: len(MEASURE_COLUMNS)]) == MEASURE_COLUMNS
    lab = np.zeros((8, 8), np.uint16)
    lab[2:5, 2:5] = 1
    scaled = measure_labels(lab, scale=(0.5, 0.5))
    assert set(PHYSICAL_COLUMNS) <= set(scaled.columns)
    assert scaled["area_physical"].iloc[0] == pytest.approx(9 * 0.25)


# ------------------------------------------------------------------------------ bad input
def test_empty_constant_and_nan_images():
    with pytest.raises(Sam3Error, match="empty"):
        count_objects(np.zeros((0, 0)), "classical")
    with pytest.raises(Sam3Error, match="no finite"):
        count_objects(np.full((32, 32), np.nan), "classical")
    res = count_objects(np.full((64, 64), 7, np.uint16), "classical")
    assert res.count == 0 and len(res.table) == 0
    assert any("constant" in w for w in res.warnings)
    res = count_objects(np.zeros((64, 64), np.float32), "classical")
    assert res.count == 0
    with pytest.raises(Sam3Error, match="diameter"):
        count_objects(np.ones((32, 32)), "classical", diameter=-3)
    with pytest.raises(Sam3Error, match="method"):
        count_objects(np.ones((32, 32)), method="magic")


def test_nan_holes_and_negative_values(nuclei, counted):
    img = nuclei[0].astype(np.float32) - 5000.0  # negative everywhere (background-subtracted data)
    assert count_objects(img, "classical").count == counted.count
    holes = nuclei[0].astype(np.float32)
    holes[100:104, :] = np.nan
    assert abs(count_objects(holes, "classical").count - counted.count) <= 0.05 * counted.count


def test_one_pixel_objects():
    img = np.zeros((64, 64), np.uint16)
    pts = [(5, 5), (20, 40), (33, 10), (50, 50), (60, 20)]
    for y, x in pts:
        img[y, x] = 1000
    res = count_objects(img, "classical", diameter=1)
    assert res.count == 5
    # without diameter=1, isolated single pixels are taken for hot camera pixels, and said so
    auto = count_objects(img, "classical")
    assert auto.count == 0 and any("hot pixels" in w for w in auto.warnings)
    assert sorted(zip(res.table["centroid_y"], res.table["centroid_x"], strict=True)) == sorted(pts)


def test_rgb_and_multichannel(nuclei, counted):
    img = nuclei[0]
    rgb8 = np.repeat((img / img.max() * 255).astype(np.uint8)[..., None], 3, axis=-1)
    assert abs(count_objects(rgb8, "classical").count - counted.count) <= 0.05 * counted.count
    two = np.stack([np.zeros_like(img), img])
    with pytest.raises(Sam3Error, match="channel"):
        count_objects(two, "classical")
    assert count_objects(two, "classical", channel=1).count == counted.count
    with pytest.raises(Sam3Error, match="Channel 5"):
        count_objects(two, "classical", channel=5)
    with pytest.raises(Sam3Error, match="2-D plane|count_stack|channels"):
        count_objects(np.zeros((20, 30, 30, 30)), "classical")


def test_hot_pixels_do_not_become_objects():
    clean, gt = synthetic_nuclei((256, 256), seed=8, diameter=16)
    hot, _ = synthetic_nuclei((256, 256), seed=8, diameter=16, hot_pixels=300)
    assert (hot == 65535).sum() >= 250
    n_clean = count_objects(clean, "classical").count
    n_hot = count_objects(hot, "classical").count
    assert abs(n_hot - n_clean) <= 0.03 * n_clean
    res = count_objects(hot, "classical")
    assert match_labels(gt, res.labels)["f1"] >= 0.85
    assert any("hot pixels" in w for w in res.warnings)


# ------------------------------------------------------------------------------ progress, stacks
def test_iter_count_yields_progress_and_returns_result(nuclei):
    gen = iter_count(nuclei[0], "classical")
    reports = []
    res = run_to_end(gen, on_progress=reports.append)
    assert isinstance(res, CountResult)
    assert reports and all(isinstance(r, Progress) for r in reports)
    assert any("splitting" in r.message for r in reports)


def test_cancel_stops_between_steps(nuclei):
    cancel = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p)
        cancel.set()

    with pytest.raises(Cancelled):
        run_to_end(iter_count(nuclei[0], "classical"), on_progress=on_progress, cancel=cancel)
    assert len(seen) == 1


def test_count_stack_has_plane_column():
    planes = [synthetic_nuclei((96, 96), seed=s, diameter=14)[0] for s in range(3)]
    res = count_stack(np.stack(planes), "classical")
    assert res.labels.shape == (3, 96, 96)
    # one diameter for the whole stack, each plane counted at it
    assert res.plane_counts == [
        count_objects(p, "classical", diameter=res.diameter).count for p in planes
    ]
    assert res.count == sum(res.plane_counts) == len(res.table)
    assert list(res.table["slice"].unique()) == [0, 1, 2]
    assert res.counts == {"classical": res.count}


# ------------------------------------------------------------------------------ sam3 path
class TruthEngine:
    """Stands in for Sam3Engine: returns the ground-truth objects of whatever crop it is shown.

    Crops are located in the full image by exact comparison with the candidate tiles; exemplar
    composites (tile + pasted exemplar strip) also get a fake object on the strip, which the
    counter must drop.
    """

    image_size = 1008

    def __init__(self, image, gt, tiles=None, score=0.8):
        self.image, self.gt, self.tiles, self.score = image, gt, tiles, score
        self.text_calls, self.exemplar_calls = [], []

    def _locate(self, plane):
        h, w = plane.shape[:2]
        tiles = self.tiles or [type("T", (), {"y0": 0, "x0": 0})()]
        for t in tiles:
            y0, x0 = t.y0, t.x0
            if (
                y0 + h <= self.image.shape[0]
                and x0 + w <= self.image.shape[1]
                and np.array_equal(self.image[y0 : y0 + h, x0 : x0 + w], plane)
            ):
                return y0, x0
        raise AssertionError("crop not found")

    def _cands(self, y0, x0, h, w, prompt, kind):
        c = Candidates.from_label_image(self.gt[y0 : y0 + h, x0 : x0 + w], prompt=prompt, kind=kind)
        return Candidates(c.masks, np.full(len(c), self.score), c.boxes, c.prompts, kind)

    def segment_text(self, plane, concepts, **kw):
        self.text_calls.append((plane.shape, list(concepts), kw))
        y0, x0 = self._locate(plane)
        return self._cands(y0, x0, *plane.shape, concepts[0], "text")

    def segment_exemplars(self, plane, boxes, labels=None, text=None, **kw):
        self.exemplar_calls.append((plane.shape, np.asarray(boxes), np.asarray(labels)))
        boxes = np.asarray(boxes)
        assert labels is not None and len(labels) == len(boxes)
        assert (boxes[:, 2] <= plane.shape[1]).all() and (boxes[:, 3] <= plane.shape[0]).all()
        if self.tiles is None:
            return self._cands(0, 0, *plane.shape, "exemplar", "exemplar")
        th = plane.shape[0]
        for t in self.tiles:  # the tile is the left part of the composite
            tw = t.x1 - t.x0
            if t.y1 - t.y0 == th and np.array_equal(self.image[t.slices], plane[:, :tw]):
                inner = self._cands(t.y0, t.x0, th, tw, "exemplar", "exemplar")
                masks = np.zeros((len(inner) + 1, *plane.shape), bool)
                masks[:-1, :, :tw] = inner.masks
                x0, y0, x1, y1 = boxes[0].astype(int)
                masks[-1, y0:y1, x0:x1] = True  # the exemplar itself, found on the strip
                return Candidates.from_masks(
                    masks, np.full(len(masks), self.score), prompts="exemplar", kind="exemplar"
                )
        raise AssertionError("tile not found in composite")


@pytest.fixture(scope="module")
def big_nuclei():
    return synthetic_nuclei((300, 340), seed=21, diameter=14, coverage=0.45)


def test_sam3_tiled_text_count_recovers_every_object(big_nuclei):
    img, gt = big_nuclei
    side, overlap = 120, 21
    eng = TruthEngine(img, gt, tile_grid(img.shape, side, overlap))
    reports = []
    res = run_to_end(
        iter_count(img, "sam3", prompt="nucleus", engine=eng, tile=side, diameter=14),
        on_progress=reports.append,
    )
    n_tiles = len(eng.text_calls)
    assert n_tiles == res.meta["tiles"] > 1
    assert sum("tile" in r.message for r in reports) >= n_tiles
    assert match_labels(gt, res.labels)["f1"] == 1.0
    assert res.count == gt.max() and res.counts == {"nucleus": gt.max()}
    assert np.allclose(res.table["score"], 0.8) and set(res.table["prompt"]) == {"nucleus"}


def test_sam3_auto_tiles_from_diameter(big_nuclei):
    img, gt = big_nuclei
    # 1008 px model, 40 px per object -> 14 px objects need tiles of ~<=353 px; count limit smaller
    res = count_objects(img, "sam3", prompt="nucleus", engine=TruthEngine(img, gt, None), tile=None)
    assert res.meta["tiles"] == 1 and res.count == gt.max()
    side = res.meta["tile_size"]
    assert side == max(img.shape)


def test_sam3_cancel_between_tiles(big_nuclei):
    img, gt = big_nuclei
    eng = TruthEngine(img, gt, tile_grid(img.shape, 120, 21))
    cancel = threading.Event()

    def on_progress(p):
        if "tile 2/" in p.message:
            cancel.set()

    with pytest.raises(Cancelled):
        run_to_end(
            iter_count(img, "sam3", prompt="nucleus", engine=eng, tile=120, diameter=14),
            on_progress=on_progress,
            cancel=cancel,
        )
    assert len(eng.text_calls) == 1  # the second tile was never sent to the model


def test_sam3_exemplars_pasted_beside_each_tile(big_nuclei):
    img, gt = big_nuclei
    side = 120
    tiles = tile_grid(img.shape, side, 21)
    eng = TruthEngine(img, gt, tiles)
    ys, xs = np.nonzero(gt == 5)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    ys, xs = np.nonzero(gt == 9)
    negative = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    too_big = [0, 0, 200, 200]  # does not fit beside a 120 px tile: left out, with a warning
    res = count_objects(
        img,
        "sam3",
        exemplars=[too_big, box, negative],
        exemplar_labels=[1, 1, 0],
        engine=eng,
        tile=side,
        diameter=14,
    )
    assert any("1 of 3" in w or "2 of 3" in w for w in res.warnings)
    assert len(eng.exemplar_calls) == len(tiles)
    for shape, boxes, labels in eng.exemplar_calls:
        assert shape[1] > side and (boxes[:, 0] >= side).all()  # boxes point into the strip
        assert list(labels) == [1, 0]  # labels follow the boxes that fit
    assert res.count == gt.max()  # the strip's fake object was dropped
    assert match_labels(gt, res.labels)["f1"] == 1.0
    auto = count_objects(img, "sam3", exemplars=[box], engine=eng, tile=side)
    assert auto.diameter == pytest.approx(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
    with pytest.raises(Sam3Error, match="too large"):
        count_objects(img, "sam3", exemplars=[too_big], engine=eng, tile=side)


def test_sam3_needs_engine_and_prompt(nuclei):
    with pytest.raises(Sam3Error, match="loaded model"):
        count_objects(nuclei[0], "sam3", prompt="nucleus")
    eng = TruthEngine(*nuclei)
    with pytest.raises(Sam3Error, match="prompt"):
        count_objects(nuclei[0], "sam3", engine=eng)
    with pytest.raises(Sam3Error, match="empty or outside"):
        count_objects(nuclei[0], "sam3", engine=eng, exemplars=[[10, 10, 10, 20]])


def test_sam3_with_tiny_random_checkpoint(engine, nuclei):
    """Structure only: random weights give random masks."""
    img = nuclei[0][:160, :200]
    before = dict(engine.stats)
    reports = []
    res = run_to_end(
        iter_count(
            img, "sam3", prompt="nucleus, cell", engine=engine, min_score=0.0, diameter=12, tile=96
        ),
        on_progress=reports.append,
    )
    n_tiles = res.meta["tiles"]
    assert n_tiles == len(tile_grid(img.shape, 96, 18)) > 1
    assert engine.stats["detector_calls"] - before["detector_calls"] >= n_tiles
    assert res.labels.shape == img.shape
    assert res.count == count_distinct(res.labels) == len(res.table)
    assert set(res.table["prompt"]) <= {"nucleus", "cell"}
    assert sum(res.counts.values()) == res.count
    assert ((res.table["score"] >= 0) & (res.table["score"] <= 1)).all()
    assert sum("tile" in r.message for r in reports) >= n_tiles


def test_pure_noise_and_empty_planes_give_nothing_and_say_why(counted):
    rng = np.random.default_rng(0)
    cam = (rng.poisson(np.full((256, 256), 5.0)) + 100).astype(np.uint16)  # offset + shot noise
    for plane in (rng.normal(100, 10, (256, 256)).astype(np.float32), cam):
        res = count_objects(plane, "classical")
        assert res.count <= 3, res.count
        assert any("camera noise" in w and "channel" in w and "SAM3" in w for w in res.warnings)
    assert not any("noise" in w for w in counted.warnings)


def test_dim_nuclei_clear_the_noise_floor():
    """Uniform nuclei at twice the pixel noise are still found: the floor is the noise after
    smoothing, not the pixel noise."""
    from scipy import ndimage as ndi

    _, gt = synthetic_nuclei((256, 256), seed=3, diameter=16, coverage=0.3)
    rng = np.random.default_rng(1)
    dim = ndi.gaussian_filter((gt > 0) * 2.0, 1.0) + rng.normal(0, 1.0, gt.shape)
    m = match_labels(gt, count_objects(dim.astype(np.float32), "classical").labels)
    assert m["recall"] > 0.6, m


def _phase_contrast_like(seed=0):
    """Mid-grey field crowded with dark cell bodies ringed by bright halos (phase contrast).
    (A field that is mostly empty background is not recognised: see suitability.py.)"""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    body = np.zeros((256, 256), np.float32)
    for _ in range(80):
        cy, cx = rng.uniform(8, 248, 2)
        body[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1
    halo = ndi.gaussian_filter(body, 4) - ndi.gaussian_filter(body, 1.5)
    img = 1000 - 600 * ndi.gaussian_filter(body, 1) + 2500 * np.clip(-halo, 0, None)
    return (img + rng.normal(0, 10, img.shape)).astype(np.float32)


def test_phase_contrast_is_detected_not_counted():
    from napari_sam3.core.classical.intensity import pixel_noise
    from napari_sam3.core.classical.suitability import background_fraction

    img = _phase_contrast_like()
    res = count_objects(img, "classical")
    assert res.count == 0
    assert any("does not look like fluorescence" in w and "SAM3" in w for w in res.warnings)
    forced = count_objects(
        img, "classical", polarity="dark"
    )  # the user overrides: counted as asked
    assert forced.count > 0
    fluo, _ = synthetic_nuclei((256, 256), seed=2, coverage=0.55, touching=0.75)
    fluo = fluo.astype(np.float32)
    assert background_fraction(fluo, pixel_noise(fluo)) > 0.25  # dense fluorescence: not flagged


@pytest.mark.parametrize("method", ["classical", pytest.param("learned", marks=pytest.mark.slow)])
def test_forced_polarity_on_brightfield_or_he_keeps_a_warning(method):
    """Issue 18: forcing the polarity past the not-fluorescence check counts as asked, but the
    result keeps a warning (thousands of objects on H&E came back unflagged)."""
    from skimage import data

    he_like = data.immunohistochemistry()  # RGB stained tissue (shipped with scikit-image)
    brightfield = data.cell()  # transmitted light
    forced_counts = []
    for img in (he_like, brightfield):
        assert count_objects(img, method).count == 0  # auto: refused
        forced = count_objects(img, method, polarity="dark")
        assert any("only because the polarity was set" in w for w in forced.warnings)
        forced_counts.append(forced.count)
    # the stained nuclei of H&E are counted as asked (the nucleus network may find nothing
    # nucleus-like in the transmitted-light cell; the warning stays either way)
    assert forced_counts[0] > 0
    fluo, _ = synthetic_nuclei((256, 256), seed=2, coverage=0.4)
    res = count_objects(fluo, method, polarity="bright")  # forced on fluorescence: no such note
    assert res.count > 10
    assert not any("polarity was set" in w for w in res.warnings)


def test_edges_fit_the_nucleus_not_its_halo():
    """A bright uniform disc blurred by the optics: the mask is the disc, at its half height."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:128, :128]
    disc = (((yy - 64) ** 2 + (xx - 64) ** 2) < 20**2).astype(np.float32)
    img = ndi.gaussian_filter(disc * 1000, 3) + 100
    img += np.random.default_rng(0).normal(0, 5, img.shape).astype(np.float32)
    res = count_objects(img.astype(np.float32), "classical", diameter=40)
    assert res.count == 1
    area = int((res.labels > 0).sum())
    assert abs(area / disc.sum() - 1) < 0.1, area / disc.sum()


def test_stack_gets_one_diameter_and_empty_planes_stay_empty():
    from napari_sam3.core.counting.count import count_stack

    planes = [synthetic_nuclei((192, 192), seed=s, diameter=14, coverage=0.3)[0] for s in (1, 2)]
    rng = np.random.default_rng(4)
    empty = rng.normal(float(np.median(planes[0])), 1.0, (192, 192)).astype(np.float32)
    stack = np.stack([planes[0], empty, planes[1]])
    res = count_stack(stack, "classical")
    assert res.meta["diameter_source"] == "stack"
    assert 11 <= res.diameter <= 17
    assert res.plane_counts[1] <= 3 and res.plane_counts[0] > 10
    own = count_stack(stack, "classical", per_plane_diameter=True)
    assert own.meta["diameter_source"] == "per plane"
    given = count_stack(stack, "classical", diameter=14)
    assert given.meta["diameter_source"] == "given" and given.diameter == 14
    from napari_sam3.core.counting.count import stack_count_options

    opts = stack_count_options(list(stack), "classical", polarity="auto")  # per-plane callers
    assert opts["diameter"] == res.diameter and opts["diameter_source"] == "stack"
    assert count_objects(stack[1], "classical", **opts).count == res.plane_counts[1]
    assert stack_count_options(stack, "sam3") == {}


def test_pixel_noise_of_quantised_quiet_images():
    from napari_sam3.core.classical.intensity import pixel_noise

    rng = np.random.default_rng(0)
    quiet = np.round(rng.normal(3, 0.35, (300, 300))).astype(np.float32)  # 8-bit, < 1 grey level
    assert 0.2 < pixel_noise(quiet) < 0.6


def test_steepest_ascent_basins_match_watershed():
    from skimage.segmentation import watershed

    from napari_sam3.core.classical.watershed import ascend_basins

    yy, xx = np.mgrid[:40, :60].astype(np.float32)
    surf = np.exp(-((yy - 20) ** 2 + (xx - 18) ** 2) / 60) + 0.8 * np.exp(
        -((yy - 20) ** 2 + (xx - 42) ** 2) / 60
    )
    surf += 0.3 * np.exp(-((yy - 12) ** 2 + (xx - 30) ** 2) / 4)  # an unmarked maximum
    surf = surf.astype(np.float32)
    region = surf > 0.05
    markers = np.zeros(surf.shape, np.int32)
    markers[20, 18], markers[20, 42] = 1, 2
    got = np.zeros(surf.shape, np.int32)
    got[region] = ascend_basins(surf, markers, region)
    ref = watershed(-surf, markers, mask=region)
    assert set(np.unique(got[region])) == {1, 2}  # the unmarked basin is absorbed
    assert (got[region] == ref[region]).mean() > 0.95


def test_shallow_basins_merge_deep_ones_stay():
    from napari_sam3.core.classical.watershed import merge_shallow_basins

    surf = np.array([[1.0, 0.999, 1.0, 0.5, 1.0]], np.float32)
    lab = np.array([[1, 1, 2, 2, 3]], np.int32)
    peak = np.array([0, 1.0, 1.0, 1.0], np.float32)
    pos = np.array([[0, 0], [0, 0], [0, 2], [0, 4]], float)  # seed row/col per label
    out = merge_shallow_basins(lab, surf, peak, pos, 0.01, 3.0)
    assert out[0, 0] == out[0, 2] and out[0, 4] != out[0, 2]
    out = merge_shallow_basins(lab, surf, peak, pos, 0.01, 1.5)  # seeds too far apart: kept
    assert len(np.unique(out)) == 3


def test_small_nuclei_count():
    img, gt = synthetic_nuclei((256, 256), seed=5, diameter=8, coverage=0.45)
    res = count_objects(img, "classical")
    m = match_labels(gt, res.labels)
    assert m["f1"] > 0.85 and abs(m["count_error"]) < 0.12, m  # overlapping pairs: see above


def test_size_limits_are_image_pixels_on_the_upsampled_path():
    """Small nuclei are segmented on an upsampled grid; max_size still means image pixels."""
    img, gt = synthetic_nuclei((256, 256), seed=5, diameter=8, coverage=0.45)
    free = count_objects(img, "classical")
    areas = np.bincount(free.labels.ravel())[1:]
    largest = int(areas.max())
    # a limit just above the largest object keeps every object, one below it drops some
    assert count_objects(img, "classical", max_size=largest + 1).count == free.count
    assert count_objects(img, "classical", max_size=int(np.median(areas))).count < free.count


def test_sam3_count_tiles_skip_the_tracker_neck(engine, nuclei):
    """Tiles are never clicked: their cached features carry no tracker embeddings; images encoded
    outside the count still get them (the first click stays cheap)."""
    img = nuclei[0][:150, :190] + 1  # content not cached by other tests
    before = set(engine.cache.keys())
    count_objects(img, "sam3", prompt="nucleus", engine=engine, min_score=0.0, diameter=12, tile=96)
    tiles = [engine.cache.get(k) for k in set(engine.cache.keys()) - before]
    assert len(tiles) > 1 and all(t.tracker is None for t in tiles)
    plane = nuclei[0][:100, :100] + 2
    assert engine.encode(plane).tracker is not None
    with engine.skipping_tracker_neck():
        assert engine.encode(plane + 1).tracker is None
    # a click on a tile-like image encoded without the neck still works (neck on first click)
    cands = engine.segment_points(plane + 1, [[50, 50]], [1])
    assert len(cands) > 0 and engine.encode(plane + 1).tracker is not None


def test_basins_merge_only_without_a_neck_between_their_seeds():
    from scipy import ndimage as ndi

    from napari_sam3.core.classical.watershed import merge_convex_pairs

    yy, xx = np.mgrid[:80, :80]

    def disc(cx):
        return (yy - 40) ** 2 + (xx - cx) ** 2 <= 15**2

    def halves(mask, cut):  # two basins either side of column ``cut``, seeds 16 px apart
        lab = np.where(mask, np.where(xx < cut, 1, 2), 0).astype(np.int32)
        pos = np.array([[0, 0], [40, cut - 8], [40, cut + 8]], float)
        return lab, ndi.distance_transform_edt(mask).astype(np.float32), pos

    one = merge_convex_pairs(*halves(disc(40), 40), dist=20, tol=1.0)  # convex: no neck
    assert len(np.unique(one)) - 1 == 1
    pair = disc(32) | disc(48)  # two nuclei 16 px apart (half a diameter): a neck between
    lab, dt, pos = halves(pair, 40)
    assert len(np.unique(merge_convex_pairs(lab, dt, pos, dist=20, tol=1.0))) - 1 == 2
    lab, dt, pos = halves(disc(40), 40)
    assert len(np.unique(merge_convex_pairs(lab, dt, pos, dist=10, tol=1.0))) - 1 == 2  # far


def test_a_low_photon_8bit_plane_of_large_nuclei_keeps_their_size():
    """Few photons and 12 grey levels: hundreds of one-pixel noise specks once outvoted the
    nuclei and set the diameter to 1.6 px (then 10x upsampling and thousands of objects)."""
    img, lab = synthetic_nuclei((512, 512), seed=5, diameter=60, coverage=0.3, touching=0.3)[:2]
    rng = np.random.default_rng(5)
    x, fg = img.astype(np.float32), lab > 0
    b0 = np.median(x[~fg])
    signal = np.clip((x - b0) / (np.quantile(x[fg], 0.9) - b0), 0, None)
    photons = rng.poisson((0.3 * signal + 0.2) * 6).astype(np.float32)
    u8 = np.clip(np.round(photons * 200 / np.quantile(photons, 0.999)), 0, 255).astype(np.uint8)
    assert len(np.unique(u8)) <= 16
    assert 0.6 * 60 <= estimate_diameter(u8) <= 1.5 * 60
    n_true = len(np.unique(lab)) - 1
    assert count_objects(u8).count <= 3 * n_true
