"""Headless batch runs (the ``napari-sam3`` CLI): plan, process per file, resume, Dask.

No Qt, no napari. `run_batch` is the entry point; `process_file` is what each worker runs.
"""

from .records import RecordState, check_record
from .runner import BatchReport, run_batch
from .settings import BatchSettings

__all__ = ["BatchReport", "BatchSettings", "RecordState", "check_record", "run_batch"]
