"""Training engines behind one protocol, and the choice between them (for the CLI and the pipeline alike).

An engine runs a `TrainPlan` to a LoRA file (`run`) or says what it would do (`describe`, for a dry
run). `builtin` is charframe's own trainer; `kohya` runs an sd-scripts checkout with the same plan.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from charframe.errors import CharframeError
from charframe.training.engines.builtin import BuiltinEngine
from charframe.training.engines.kohya import KohyaEngine, find_kohya
from charframe.training.plan import TrainPlan
from charframe.training.result import TrainResult

ENGINES = ("builtin", "kohya")


class Engine(Protocol):
    name: str
    can_resume: bool  # continues an interrupted run from its saved state

    def run(self, plan: TrainPlan, *, resume: bool = False, **kw: Any) -> TrainResult:
        """Train `plan` (continuing its saved state with `resume`) and return the result."""

    def describe(self, plan: TrainPlan) -> str:
        """What `run` would do, as text, after checking the inputs it can check without training."""


def get_engine(name: str = "builtin", *, kohya_dir: str | os.PathLike | None = None,
               kohya_python: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Engine:
    """The engine called `name`; the kohya one finds its checkout (see `engines.kohya.find_kohya`)."""
    if name == "builtin":
        return BuiltinEngine()
    if name == "kohya":
        return KohyaEngine(find_kohya(kohya_dir, kohya_python, root))
    raise CharframeError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}", param="engine")


def train_with(plan: TrainPlan, engine: str | Engine = "builtin", *, resume: bool = False, dry_run: bool = False,
               **kw: Any) -> TrainResult | str:
    """Train `plan` with `engine` (a name or an `Engine`); with `dry_run`, the engine's description instead.

    `kw` are `get_engine`'s options when `engine` is a name (kohya_dir, kohya_python, root); others go to `run`.
    """
    name = engine if isinstance(engine, str) else engine.name
    if plan.pivotal.enabled and name != "builtin":  # refused before an external checkout is even looked for
        raise CharframeError(f"pivotal tuning ([plan.pivotal]) is done by the built-in trainer; {name} trains no "
                             "embedding: use the builtin {param}", param="engine")
    if isinstance(engine, str):
        where = {k: kw.pop(k) for k in ("kohya_dir", "kohya_python", "root") if k in kw}
        engine = get_engine(engine, **where)
    if resume and not engine.can_resume:
        raise CharframeError(f"{{param}} works with the built-in engine; {engine.name} restarts the run", param="resume")
    if dry_run:
        return engine.describe(plan)
    return engine.run(plan, resume=resume, **kw)
