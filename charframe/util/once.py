"""Say a thing once per process.

Some notes are true of the whole session, not of each step: the tiny random demo model is in use, 8-bit
AdamW falls back to plain AdamW on a CPU. A pipeline run loads the model three times per stage (generate,
train, preview) and trains once per stage; repeating such a note each time buried it (64 copies in one
afternoon) — so those notes go through `first_time`, and a long-lived process (the watcher) says each once.
"""

from __future__ import annotations

_said: set[str] = set()


def first_time(key: str) -> bool:
    """True the first time `key` is asked about in this process, False after."""
    if key in _said:
        return False
    _said.add(key)
    return True


def forget() -> None:
    """Forget what was said (tests start each case fresh)."""
    _said.clear()
