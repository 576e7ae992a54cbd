"""Prompt and negative → per-step conditioning for both passes (prompt editing and alternation as WebUI schedules
them), each distinct text encoded once.

Step counts are WebUI's: the first pass's schedule is made for the sampler's total steps (steps × 2 for second-order
samplers), the hires pass's for (first-pass total, hires total) so `[a:b:0.5]` has switched before the hires pass
starts and `[a:b:1.5]` switches half-way through it.
"""

from __future__ import annotations

from typing import Any, Callable

from charframe.generation.denoiser import CondSchedule
from charframe.generation.passes import Conds
from charframe.generation.samplers import Choice
from charframe.prompt_syntax import prompt_schedule


class TextEncoder:
    """`encode(text)` with a cache: a text met again (the same negative, the same editing branch in another
    image) is not run through CLIP again."""

    def __init__(self, encode: Callable[[str], Any]) -> None:
        self._encode = encode
        self.cache: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        if text not in self.cache:
            self.cache[text] = self._encode(text)
        return self.cache[text]


def schedule(text: str, encode: Callable[[str], Any], steps: int, hires_steps: int | None = None) -> CondSchedule:
    return CondSchedule(tuple((end, encode(t)) for end, t in prompt_schedule(text, steps, hires_steps)))


def conditioning(prompt: str, negative: str, choice: Choice, steps: int, hires_steps: int,
                 encode: Callable[[str], Any]) -> Conds:
    """Both passes' conditioning; `hires_steps` 0 = no hires pass."""
    total = choice.sampler.total_steps(steps)
    first = (schedule(prompt, encode, total), schedule(negative, encode, total))
    if not hires_steps:
        return Conds(first, first)
    hires_total = choice.sampler.total_steps(hires_steps)
    return Conds(first, (schedule(prompt, encode, total, hires_total), schedule(negative, encode, total, hires_total)))
