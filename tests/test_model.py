"""core.sam3.loading: finding and loading SAM3, and refusing every broken or inaccessible checkpoint."""

import json
import shutil
import subprocess
import sys
import threading

import pytest
import torch

from napari_sam3.core.errors import Sam3Error
from napari_sam3.core.sam3 import loading as model_mod
from napari_sam3.core.sam3.loading import (
    ACCESS_FIX,
    check_folder,
    load_model,
    resolve_device,
    resolve_dtype,
    resolve_source,
    unload_all,
)

FIX_WORDS = ("huggingface.co/facebook/sam3", "hf auth login", "NAPARI_SAM3_MODEL")


def _has_fix(message: str) -> bool:
    return all(word in message for word in FIX_WORDS)


@pytest.fixture
def private_cache(monkeypatch):
    """Load/unload tests work on an empty model cache and leave the session's cache alone."""
    monkeypatch.setattr(model_mod, "_cache", {})


def _copy(tiny_checkpoint, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(tiny_checkpoint, dst)
    return dst


# ---------------------------------------------------------------- resolution
def test_source_resolution(monkeypatch):
    monkeypatch.delenv("NAPARI_SAM3_MODEL", raising=False)
    assert resolve_source(None) == "facebook/sam3"
    monkeypatch.setenv("NAPARI_SAM3_MODEL", "/data/sam3")
    assert resolve_source(None) == "/data/sam3"
    assert resolve_source("  other/model ") == "other/model"


def test_device_and_dtype():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(Sam3Error, match="dtype"):
        resolve_dtype("int3", cpu)
    with pytest.raises(Sam3Error, match="device"):
        resolve_device("toaster")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(Sam3Error, match="no CUDA GPU"):
        resolve_device("cuda")


# ---------------------------------------------------------------- the tiny checkpoint
def test_tiny_checkpoint_has_the_facebook_sam3_layout(tiny_checkpoint):
    from safetensors import safe_open

    files = {p.name for p in tiny_checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "vocab.json",
        "merges.txt",
    } <= files
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    assert config["detector_config"]["model_type"] == "sam3"
    assert config["tracker_config"]["model_type"] == "sam3_tracker_video"
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert {k.split(".")[0] for k in keys} == {"detector_model", "tracker_model", "tracker_neck"}
    assert not any(k.startswith("tracker_model.tracker_model.") for k in keys)
    assert (tiny_checkpoint / "merges.txt").read_text().strip() == "#version: 0.2"
    assert len(json.loads((tiny_checkpoint / "vocab.json").read_text())) == 514


def test_tiny_checkpoint_dir_builds_once(tiny_checkpoint):
    from napari_sam3.testing import tiny_checkpoint_dir

    assert tiny_checkpoint_dir() == tiny_checkpoint
    assert (tiny_checkpoint / "config.json").is_file()


def test_tiny_checkpoint_is_deterministic(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from napari_sam3.testing import make_tiny_checkpoint

    a = load_file(str(tiny_checkpoint / "model.safetensors"))  # built with the default seed 0
    b = load_file(str(make_tiny_checkpoint(tmp_path / "again", seed=0) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_checkpoint_loads_with_zero_missing_weights(tiny_checkpoint):
    """Through our loader, and (independently) through transformers' own loading report."""
    from transformers import Sam3Model, Sam3TrackerModel, Sam3VideoModel

    loaded = load_model(str(tiny_checkpoint), device="cpu")
    assert loaded.meta["unexpected_keys"] == []
    for cls in (Sam3VideoModel, Sam3Model, Sam3TrackerModel):
        _, info = cls.from_pretrained(str(tiny_checkpoint), output_loading_info=True)
        assert list(info["missing_keys"]) == [], cls.__name__
        assert list(info["mismatched_keys"]) == [], cls.__name__


def test_one_backbone_in_memory(tiny_checkpoint):
    """Detector and tracker share ONE vision backbone; the tracker has none of its own."""
    from transformers.models.sam3.modeling_sam3 import Sam3ViTModel

    loaded = load_model(str(tiny_checkpoint), device="cpu")
    backbones = [m for m in loaded.model.modules() if isinstance(m, Sam3ViTModel)]
    assert len(backbones) == 1
    assert loaded.model.tracker_model.vision_encoder is None
    assert loaded.vision_encoder.backbone is backbones[0]
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training


# ---------------------------------------------------------------- refusing broken checkpoints
@pytest.mark.parametrize(
    "key",
    [
        "tracker_model.mask_decoder.iou_prediction_head.proj_out.weight",
        "detector_model.dot_product_scoring.query_proj.weight",
        "tracker_neck.fpn_layers.0.proj1.weight",
    ],
)
def test_missing_weight_is_refused_by_name(tiny_checkpoint, tmp_path, private_cache, key):
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_checkpoint, tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    if key not in weights:  # keep the test honest if the neck's layer names change
        key = next(k for k in weights if k.startswith(key.split(".")[0]))
    del weights[key]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(Sam3Error) as err:
        load_model(str(folder), device="cpu")
    assert key in str(err.value)
    assert "random" in str(err.value)
    assert _has_fix(str(err.value))


def test_missing_folder(tmp_path, private_cache):
    with pytest.raises(Sam3Error, match="does not exist") as err:
        load_model(str(tmp_path / "nowhere" / "sam3"), device="cpu")
    assert _has_fix(str(err.value))


def test_empty_folder(tmp_path, private_cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Sam3Error, match="config.json") as err:
        load_model(str(tmp_path / "empty"), device="cpu")
    assert _has_fix(str(err.value))


def test_a_file_is_not_a_folder(tmp_path, private_cache):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(Sam3Error, match="is a file"):
        load_model(str(f), device="cpu")


def test_folder_of_another_model_type(tiny_checkpoint, tmp_path, private_cache):
    folder = _copy(tiny_checkpoint, tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(Sam3Error, match="bert checkpoint, not SAM3") as err:
        load_model(str(folder), device="cpu")
    assert _has_fix(str(err.value))


def test_detector_only_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "det"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam3"}))
    with pytest.raises(Sam3Error, match="only part of SAM3"):
        check_folder(folder)


@pytest.mark.parametrize("remove", ["model.safetensors", "processor_config.json", "tokenizer.json"])
def test_incomplete_folder(tiny_checkpoint, tmp_path, private_cache, remove):
    folder = _copy(tiny_checkpoint, tmp_path)
    (folder / remove).unlink()
    if remove == "tokenizer.json":
        (folder / "vocab.json").unlink()
    with pytest.raises(Sam3Error, match="incomplete") as err:
        load_model(str(folder), device="cpu")
    assert remove in str(err.value)


def test_corrupt_weights_file(tiny_checkpoint, tmp_path, private_cache):
    folder = _copy(tiny_checkpoint, tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Sam3Error, match="download it again"):
        load_model(str(folder), device="cpu")


def test_offline_hub_id_not_cached(private_cache):
    with pytest.raises(Sam3Error, match="not in the local Hugging Face cache") as err:
        load_model("napari-sam3-tests/never-downloaded", device="cpu")
    assert _has_fix(str(err.value))


def test_gated_hub_id_names_the_fix(monkeypatch, private_cache):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        err = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(err, "401 Client Error: access to model facebook/sam3 is restricted")
        raise err

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(Sam3Error, match="gated") as err:
        load_model("facebook/sam3", device="cpu")
    message = str(err.value)
    assert _has_fix(message)
    assert "accept the licence" in message
    assert ACCESS_FIX in message


# ---------------------------------------------------------------- process-wide cache
def test_loaded_once_per_process_thread_safe(tiny_checkpoint, private_cache, monkeypatch):
    calls = []
    real = model_mod._load

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(model_mod, "_load", counting)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(load_model(str(tiny_checkpoint), "cpu")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(r is results[0] for r in results)
    # another dtype is another entry
    half = load_model(str(tiny_checkpoint), "cpu", dtype="bfloat16")
    assert half is not results[0]
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert len(calls) == 2


def test_unload_all_frees(tiny_checkpoint, private_cache):
    import gc
    import weakref

    from napari_sam3.core.sam3.engine import Sam3Engine

    engine = Sam3Engine.load(str(tiny_checkpoint), device="cpu")
    assert Sam3Engine.load(str(tiny_checkpoint), device="cpu") is engine
    ref = weakref.ref(engine.model)
    del engine
    unload_all()
    gc.collect()
    assert ref() is None, "the model is still referenced after unload_all()"
    assert model_mod.cached_models() == []


def test_env_var_source(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("NAPARI_SAM3_MODEL", str(tiny_checkpoint))
    loaded = load_model(None, device="cpu")
    assert loaded.source == str(tiny_checkpoint)


def test_import_is_light():
    """Importing the package and the core modules does not import torch or transformers."""
    code = (
        "import sys, napari_sam3, napari_sam3.core.sam3.loading, napari_sam3.core.sam3.engine, "
        "napari_sam3.core.sam3.feature_cache, napari_sam3.core.prompts, napari_sam3.testing;"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_same_folder_spelled_differently_loads_once(tiny_checkpoint):
    a = load_model(str(tiny_checkpoint), device="cpu")
    assert load_model(str(tiny_checkpoint) + "/", device="cpu") is a
    assert load_model(tiny_checkpoint / ".." / tiny_checkpoint.name, device="cpu") is a


def test_checkpoint_resaved_by_save_pretrained_still_loads(
    tiny_checkpoint, tmp_path, private_cache
):
    """transformers 5.x save_pretrained writes the tracker as ``tracker_model.tracker_model.*``
    (the sam3_tracker key conversion applied in reverse, scoped to the nested tracker); a user who
    re-saves the model gets that layout. It must load, complete and identical."""
    from transformers import Sam3VideoModel

    folder = _copy(tiny_checkpoint, tmp_path, "resaved")
    original = Sam3VideoModel.from_pretrained(str(tiny_checkpoint))
    (folder / "model.safetensors").unlink()
    original.save_pretrained(str(folder))
    loaded = load_model(str(folder), device="cpu")
    reference = original.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


# ---------------------------------------------------------------- safetensors only, inside the folder
def _sharded(tiny_checkpoint, tmp_path, shard_name):
    """A copy whose index maps every weight to ``shard_name`` (the real weights moved there)."""
    from safetensors import safe_open

    folder = _copy(tiny_checkpoint, tmp_path)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    target = (folder / shard_name).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder / "model.safetensors", target)
    index = {"metadata": {}, "weight_map": {k: shard_name for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_sharded_safetensors_inside_the_folder_load(tiny_checkpoint, tmp_path, private_cache):
    folder = _sharded(tiny_checkpoint, tmp_path, "model-00001-of-00001.safetensors")
    assert load_model(str(folder), device="cpu").model is not None


@pytest.mark.parametrize(
    ("shard", "words"),
    [
        ("../outside.safetensors", "outside the checkpoint folder"),
        ("pytorch_model.bin", "safetensors weights only"),
    ],
)
def test_index_pointing_outside_or_to_a_pickle_is_refused(
    tiny_checkpoint, tmp_path, private_cache, shard, words
):
    folder = _sharded(tiny_checkpoint, tmp_path, shard)
    with pytest.raises(Sam3Error, match=words):
        load_model(str(folder), device="cpu")


def test_config_that_is_a_json_list_is_one_load_error(tiny_checkpoint, tmp_path, capsys):
    import tifffile

    from napari_sam3.cli import main
    from napari_sam3.core.synthetic import synthetic_nuclei

    folder = _copy(tiny_checkpoint, tmp_path)
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(Sam3Error, match="not a model configuration"):
        check_folder(folder)
    for i in range(2):
        tifffile.imwrite(tmp_path / f"im{i}.tif", synthetic_nuclei((48, 48), seed=i)[0])
    args = [
        "segment",
        str(tmp_path / "im0.tif"),
        str(tmp_path / "im1.tif"),
        "--prompt",
        "cell",
        "--model",
        str(folder),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("not a model configuration") == 1 and "Traceback" not in err
