"""Headless batch runs (the ``napari-sam3`` CLI): plan, process per file, resume, Dask.

No Qt, no napari. `run_batch` is the entry point; `process_file` is what each worker runs.
"""

from napari_sam3.batch.records import RecordState, check_record
from napari_sam3.batch.runner import BatchReport, run_batch
from napari_sam3.batch.settings import BatchSettings

__all__ = ["BatchReport", "BatchSettings", "RecordState", "check_record", "run_batch"]
