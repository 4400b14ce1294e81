"""The layering rules, checked on the source of every module in every subpackage (a lazy import
inside a function counts): core/ and io/ import neither Qt nor napari, core/ never imports io/, and
the Qt-free napari adapters and sessions (_napari/) never import Qt. Then the same modules are
imported for real in a fresh process, which must end with no Qt or napari loaded."""

import ast
import subprocess
import sys
from pathlib import Path

import napari_sam3

PKG = Path(napari_sam3.__file__).parent
QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")
GUI = QT + ("napari", "vispy")


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                out.append(".".join(base + ([node.module] if node.module else [])))
            else:
                out.append(node.module or "")
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((PKG / folder).rglob("*.py"))


def test_layering_rules_hold_in_every_subpackage():
    broken = []
    for folder, banned in (("core", GUI + ("napari_sam3.io",)), ("io", GUI), ("_napari", QT)):
        files = _modules(folder)
        assert len(files) > 3, f"{folder}/ has no modules: the check would pass vacuously"
        for path in files:
            for mod in _imports(path):
                if any(mod == b or mod.startswith(b + ".") for b in banned):
                    broken.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not broken, "\n".join(broken)


def test_headless_modules_import_without_qt_or_napari():
    """Importing every core/io module and the CLI leaves napari and Qt unloaded (headless batch)."""
    modules = ["napari_sam3.cli"] + [
        ".".join(("napari_sam3",) + p.relative_to(PKG).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for folder in ("core", "io", "batch")
        for p in _modules(folder)
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt/napari imported by the headless code: {out.stdout}"
