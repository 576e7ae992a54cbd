"""The one exception type users see.

Library code raises `CharframeError` with a message that names the file and the fix; the CLI prints
it without a traceback and exits with `exit_code` (2 = bad input, like argparse).
"""

from __future__ import annotations


class CharframeError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
