"""Headless batch runs (the ``napari-sam3`` CLI): one run loop (`batch.loop`) for segment, count and
track; plan, per-item job, completion record, assembled run files; local or Dask.

No Qt, no napari. `run_batch` (segment / count) and `batch.track.run_track` are the entry points;
`loop.run_file` is what each worker runs.
"""

from napari_sam3.batch.process import run_batch
from napari_sam3.batch.records import RecordState, check_record
from napari_sam3.batch.runner import BatchReport
from napari_sam3.batch.settings import BatchSettings

__all__ = ["BatchReport", "BatchSettings", "RecordState", "check_record", "run_batch"]
