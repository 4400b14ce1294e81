"""What the user reads when something goes wrong or a result is dropped: napari notifications. No Qt.

The sessions and the Qt tabs both tell the user through these, so a message reads the same wherever
it comes from.
"""

from __future__ import annotations

from napari_sam3.core.errors import Sam3Error


def error_message(exc: BaseException) -> str:
    """What the user reads: a `Sam3Error` says the fix itself; anything else gets its type named."""
    if isinstance(exc, Sam3Error):
        return str(exc)
    return f"SAM3 failed with {type(exc).__name__}: {exc}"


def notify_error(exc: BaseException) -> None:
    """Show ``exc`` as a napari error notification (its `error_message`)."""
    from napari.utils.notifications import show_error

    show_error(error_message(exc))


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
