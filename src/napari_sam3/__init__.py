"""napari-sam3: SAM3 (Segment Anything with Concepts) for napari, with a Qt-free core."""

__version__ = "0.1.0"

from .core.candidates import Candidates
from .core.errors import Cancelled, Sam3Error
from .core.images import Preprocessing

__all__ = ["Candidates", "Cancelled", "Preprocessing", "Sam3Error", "__version__"]
