"""napari-sam3: SAM3 (Segment Anything with Concepts) for napari, with a Qt-free core.

The public API is small; importing this package loads neither torch nor napari. `Sam3Engine`,
`count_objects` and `make_tiny_checkpoint` are imported on first use.
"""

from importlib import import_module

from napari_sam3.core.errors import Cancelled, Sam3Error
from napari_sam3.core.images import Preprocessing
from napari_sam3.core.results.candidates import Candidates

__version__ = "0.1.0"

_LAZY = {
    "Sam3Engine": "napari_sam3.core.sam3.engine",
    "count_objects": "napari_sam3.core.counting.count",
    "make_tiny_checkpoint": "napari_sam3.testing",
}

__all__ = [
    "Candidates",
    "Cancelled",
    "Preprocessing",
    "Sam3Engine",
    "Sam3Error",
    "__version__",
    "count_objects",
    "make_tiny_checkpoint",
]


def __getattr__(name: str):
    # Lazy so that `import napari_sam3` (and napari's plugin discovery) stays light.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_sam3' has no attribute {name!r}")
