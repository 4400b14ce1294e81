"""The one exception type users see, so every shell can show its message instead of a traceback."""


class Sam3Error(Exception):
    """A problem the user can fix; the message says how.

    Raised for bad input (empty prompt, unsupported array shape, all-NaN plane), for model access
    problems (gated checkpoint, offline and not cached, incomplete folder) and for bad options.
    The napari shell turns it into a notification, the CLI into one line on stderr.
    """


class Cancelled(Sam3Error):
    """The user cancelled a long-running step."""

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)
