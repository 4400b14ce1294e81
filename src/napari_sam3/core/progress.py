"""Long steps are generators that yield `Progress` and return their result.

The same generator runs in a napari worker (each yield is a chance to show progress and to cancel)
and synchronously in the CLI and tests through `run_to_end` (the stardist-napari pattern).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from napari_sam3.core.errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report: a message for the user and, when known, step / total."""

    message: str
    step: int = 0
    total: int | None = None


ProgressGen = Generator[Progress, None, T]


def run_to_end(
    gen: Generator[Progress, None, T],
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> T:
    """Drive a progress generator synchronously and return its result.

    ``cancel`` is checked at every yield; when set, the generator is closed and `Cancelled` raised.
    """
    try:
        while True:
            report = next(gen)
            if on_progress is not None:
                on_progress(report)
            if cancel is not None and cancel.is_set():
                gen.close()
                raise Cancelled()
    except StopIteration as stop:
        return stop.value


def to_end(iter_method: Callable[..., Generator[Progress, None, T]]) -> Callable[..., T]:
    """The synchronous twin of an ``iter_*`` generator function or method: the same arguments
    (one signature to keep, not two), driven by `run_to_end`; returns the generator's result."""

    @functools.wraps(iter_method)
    def run(*args, **kwargs):
        return run_to_end(iter_method(*args, **kwargs))

    return run
