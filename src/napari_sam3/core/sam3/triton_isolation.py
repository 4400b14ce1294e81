"""Import triton so that its private LLVM cannot clash with an LLVM already in the process.

Why: ``libtriton.so`` links its own LLVM statically but exports those symbols (``llvm::*``, about
24,000 of them) with default visibility. When a napari viewer exists on a machine with software
OpenGL (Mesa llvmpipe, e.g. under Xvfb or on a remote desktop), Mesa has already loaded its own
``libLLVM-NN.so`` into the process's global symbol scope. The dynamic linker then binds about half of
libtriton's LLVM references to Mesa's LLVM, a different version with a different memory layout, and
libtriton's own static initialisers (``PassBuilder.cpp`` registering a ``DebugCounter``) crash in
``free`` while the library is still being opened. Transformers imports torchvision, torchvision imports
``torch._dynamo``, and that imports triton: so the first SAM3 load after a viewer exists killed napari
(exit 139), whichever way napari was started.

The fix: open libtriton with ``RTLD_DEEPBIND``, so the library resolves its symbols in itself (and its
own dependencies) before the global scope. libtriton then uses only its own LLVM and Mesa only its own;
nothing else changes (triton stays importable and usable for ``torch.compile`` on CUDA). `isolate_triton`
does this once, before anything imports transformers; afterwards ``import triton`` finds the module in
``sys.modules``. On platforms without ``RTLD_DEEPBIND`` (macOS, Windows: two-level namespaces, no clash)
and where triton is not installed it does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

_lock = threading.Lock()
_done = False


def isolate_triton() -> bool:
    """Import triton with deep binding if it is installed and not imported yet.

    Returns True when triton is importable (now or already), False when it is absent or failed to
    import (torch then treats triton as missing, as it would anyway). Safe to call often.
    """
    global _done
    with _lock:
        if "triton" in sys.modules:
            _done = True
            return True
        if _done:
            return False
        _done = True
        deepbind = getattr(os, "RTLD_DEEPBIND", None)
        if deepbind is None or importlib.util.find_spec("triton") is None:
            return False
        previous = sys.getdlopenflags()
        sys.setdlopenflags(previous | deepbind)
        try:
            import triton  # noqa: F401  (loads triton/_C/libtriton.so under RTLD_DEEPBIND)
        except Exception:  # noqa: BLE001 - a broken triton must not stop a CPU model load
            for name in [m for m in sys.modules if m == "triton" or m.startswith("triton.")]:
                del sys.modules[name]
            return False
        finally:
            sys.setdlopenflags(previous)
        return True
