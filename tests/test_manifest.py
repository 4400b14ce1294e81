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


def test_core_io_and_cli_never_import_qt_or_napari():
    """Importing every core/io module and the CLI leaves napari and Qt unloaded (headless batch)."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(importlib.import_module("napari_sam3").__file__).parent
    modules = ["napari_sam3.cli"] + [
        f"napari_sam3.{folder}.{path.stem}"
        for folder in ("core", "io")
        for path in sorted((root / folder).glob("*.py"))
        if path.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'magicgui', 'superqt', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt/napari imported by the headless code: {out.stdout}"
