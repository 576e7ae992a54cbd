"""The one exception type users see.

Library code raises `CharframeError` with a message that names the file and the fix; the CLI prints
it without a traceback and exits with `exit_code` (2 = bad input, like argparse).

A message about one parameter names it with the placeholder `{param}` and passes `param=` (the library's
keyword name, e.g. "clip_skip"): library callers read "clip_skip must be 1..12", the CLI reads the flag the
user typed, "--clip-skip must be 1..12" (it looks the flag up in its parser). So no library module spells a
CLI flag, and a renamed flag cannot leave a stale message behind.
"""

from __future__ import annotations


class CharframeError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None, exit_code: int | None = None) -> None:
        self.template = message
        self.param = param
        super().__init__(self.render(param) if param else message)
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self, name: str | None = None) -> str:
        """The message with `{param}` spelt `name` (a CLI flag, a TOML key); the keyword name by default."""
        return self.template.replace("{param}", name or self.param or "")
