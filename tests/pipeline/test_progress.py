"""Progress lines: one per step with its time, "step k of N" with the time left, plain when not a terminal."""

from __future__ import annotations

import io

from charframe.pipeline.progress import Progress, duration, inner_bars


def test_plain_lines_with_eta_from_last_times_and_this_runs_mean() -> None:
    out = io.StringIO()  # not a terminal
    p = Progress(out)
    assert p.tty is False and not inner_bars(stream=out)
    p.expect([("krnk", "face", "train", 600.0), ("krnk", "face", "merge", None), ("krnk", "face", "compress", 4.0),
              ("krnk", "body-sf", "merge", None)])
    p.start("krnk", "face", "train")
    p.done("krnk", "face", "train", "ran", 612.3)
    p.start("krnk", "face", "merge")
    p.done("krnk", "face", "merge", "ran", 2.0)
    p.start("krnk", "face", "compress")
    p.done("krnk", "face", "compress", "failed", 3.0)
    assert out.getvalue().splitlines() == [
        "step 1 of 4: krnk face train",  # merge has no earlier time and nothing ran yet: no guess
        "krnk face train: ran in 10 min 12 s",
        "step 2 of 4: krnk face merge, about 20 min 29 s left",  # 2 merges ≈ the mean 612.3 s, + 4 s
        "krnk face merge: ran in 2.0 s",
        "step 3 of 4: krnk face compress, about 6.0 s left",  # compress 4 s + body merge ≈ face merge 2 s
        "krnk face compress: FAILED after 3.0 s",
    ]
    assert out.getvalue().isascii()


def test_terminal_lines_carry_a_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    p = Progress(out)
    assert p.tty and inner_bars(stream=out) and not inner_bars(quiet=True, stream=out)
    p.expect([("a", "face", "prepare", 1.0), ("a", "face", "train", 3.0)])
    p.start("a", "face", "prepare")
    p.done("a", "face", "prepare", "ran", 1.0)
    p.start("a", "face", "train")
    lines = out.getvalue().splitlines()
    assert lines[0] == "░" * 20 + " step 1 of 2: a face prepare, about 4.0 s left"
    assert lines[1] == "✓ a face prepare: ran in 1.0 s"
    assert lines[2] == "█" * 10 + "░" * 10 + " step 2 of 2: a face train, about 3.0 s left"


def test_durations() -> None:
    assert [duration(s) for s in (0.42, 59.9, 61, 3599, 7500)] == ["0.4 s", "59.9 s", "1 min 1 s", "59 min 59 s", "2 h 05 min"]
