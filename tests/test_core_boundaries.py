"""The layering rules of the design: core/ and io/ import neither Qt nor napari, and core/ does not
import io/ (io builds on core). Checked on the source, so a lazy import inside a function counts."""

import ast
from pathlib import Path

import pytest

import napari_sam3

PKG = Path(napari_sam3.__file__).parent
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in ``path``; level > 0 for relative imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
    return out


@pytest.mark.parametrize("folder", ["core", "io"])
def test_no_gui_imports(folder):
    for path in sorted((PKG / folder).glob("*.py")):
        for level, mod in _imports(path):
            top = mod.split(".")[0]
            assert level or top not in GUI, f"{path.name} imports {mod}"


def test_core_does_not_import_io():
    for path in sorted((PKG / "core").glob("*.py")):
        for level, mod in _imports(path):
            absolute = level == 0 and mod.startswith("napari_sam3.io")
            relative = level == 2 and mod.split(".")[0] == "io"
            assert not (absolute or relative), f"core/{path.name} imports io ({mod})"
