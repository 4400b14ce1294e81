"""The npe2 manifest is valid, installed inside the package, and every command it names imports."""

import importlib
import importlib.resources

import pytest

npe2 = pytest.importorskip("npe2")


def test_manifest_ships_inside_the_package():
    assert importlib.resources.files("napari_sam3").joinpath("napari.yaml").is_file()


def test_manifest_is_valid_and_discoverable():
    manifest = npe2.PluginManifest.from_distribution("napari-sam3")
    assert manifest.name == "napari-sam3"
    ids = {c.id for c in manifest.contributions.commands}
    assert "napari-sam3.make_sam3_widget" in ids
    assert manifest.contributions.sample_data, "an offline sample must be contributed"


def test_every_command_target_imports():
    manifest = npe2.PluginManifest.from_distribution("napari-sam3")
    for command in manifest.contributions.commands:
        module_name, _, attr = command.python_name.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attr)), command.python_name
