"""Training recipes: logic names (CONVENTIONS §6) → a typed, saved `TrainPlan`.

`Lora3x3A50p-AdamW8` names a network, an alpha rule and an optimizer; the rules live in
`charframe/data/recipes.toml`, so the built-in trainer and the kohya command line read the same
numbers. A `TrainPlan` is everything one training run needs; it round-trips to TOML and is saved
beside the output so a LoRA file can always be traced back to the exact settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from charframe.util import toml as tomlio
from charframe.errors import CharframeError


@functools.lru_cache(maxsize=8)
def _load_recipes_cached(path: str | None) -> dict[str, Any]:
    if path is None:
        text = resources.files("charframe.data").joinpath("recipes.toml").read_text(encoding="utf-8")
        return tomlio.loads(text)
    return tomlio.load(path)


def load_recipes(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The recipe table: the shipped `recipes.toml`, or a user's copy at `path`."""
    data = _load_recipes_cached(None if path is None else str(Path(path).absolute()))
    for section in ("networks", "alphas", "optimizers", "always"):
        if section not in data:
            raise CharframeError(f"{path or 'recipes.toml'}: missing [{section}] table")
    return data


def all_logics(recipes: dict[str, Any] | None = None) -> list[str]:
    """Every canonical logic name, e.g. the 16 of §6."""
    r = recipes or load_recipes()
    return [f"{n}{a}-{o}" for n in r["networks"] for a in r["alphas"] for o in r["optimizers"]]


@dataclass(frozen=True)
class LogicParts:
    network: str
    alpha: str
    optimizer: str
    spelled: str = ""  # the optimizer as written when it is a listed alias ("AdaFacotor")

    @property
    def canonical(self) -> str:
        return f"{self.network}{self.alpha}-{self.optimizer}"

    @property
    def name(self) -> str:
        """The logic in file names: canonical letter case, an old alias spelling kept."""
        return f"{self.network}{self.alpha}-{self.spelled or self.optimizer}"


def parse_logic(logic: str, recipes: dict[str, Any] | None = None) -> LogicParts:
    """Split a logic name into its canonical parts; old spellings (aliases) are accepted."""
    r = recipes or load_recipes()
    optimizers = {name.lower(): name for name in r["optimizers"]}
    aliases = {alias.lower(): alias for spec in r["optimizers"].values() for alias in spec.get("aliases", [])}
    for name, spec in r["optimizers"].items():
        optimizers.update({alias.lower(): name for alias in spec.get("aliases", [])})
    alt = lambda names: "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))  # noqa: E731
    pattern = re.compile(
        rf"({alt(r['networks'])})({alt(r['alphas'])})-({alt(optimizers)})", flags=re.IGNORECASE
    )
    m = pattern.fullmatch(logic.strip())
    if not m:
        raise CharframeError(
            f"unknown logic {logic!r}: use (" + "|".join(r["networks"]) + ")(" + "|".join(r["alphas"])
            + ")-(" + "|".join(r["optimizers"]) + "), e.g. Lora3x3A50p-AdamW8"
        )
    by_lower = lambda table, s: next(k for k in table if k.lower() == s.lower())  # noqa: E731
    return LogicParts(by_lower(r["networks"], m[1]), by_lower(r["alphas"], m[2]), optimizers[m[3].lower()],
                      aliases.get(m[3].lower(), ""))


def _alpha(rule: dict[str, Any], dim: int) -> int:
    if "fixed" in rule:
        return int(rule["fixed"])
    return int(dim * int(rule["percent_of_dim"]) // 100)


@dataclass
class TrainPlan:
    """One training run: the user's arguments plus the recipe they select, all resolved."""

    logic: str  # canonical letter case; the old spelling "AdaFacotor" is kept if the user wrote it
    dim: int
    lr: int  # learning rate as an integer count of 1e-6
    steps: int
    dataset: str  # the dataset TOML
    out: str  # output name
    output_dir: str = "LoRAOutput"
    logging_dir: str = "LoRALog"
    model: str | None = None  # None: the tiny demo model
    vae: str | None = None
    clip_skip: int = 2
    continue_from: str | None = None
    # resolved from the recipe table
    network_module: str = "networks.lora"
    algo: str | None = None
    network_alpha: int = 1
    conv_dim: int | None = None
    conv_alpha: int | None = None
    optimizer_type: str = "AdamW8bit"
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    cpu_fallback: str | None = None
    explicit_lr: bool = True
    text_encoder_lr_count: int | None = None
    lr_scheduler: str = "cosine_with_restarts"
    lr_scheduler_num_cycles: int = 1
    seed: int = 31337
    mixed_precision: str = "fp16"
    save_precision: str = "fp16"
    gradient_checkpointing: bool = True
    attention: str = "sdpa"
    save_model_as: str = "safetensors"
    max_grad_norm: float = 1.0
    persistent_data_loader_workers: bool = True
    # options
    noise_offset: float = 0.0
    max_token_length: int | None = None  # None = 75 tokens; 150 or 225 chunk like sd-scripts
    prior_loss_weight: float = 1.0
    sample_every: int = 0  # steps between sample images; 0 = none
    sample_prompts: list[str] = field(default_factory=list)
    sample_seeds: list[int] = field(default_factory=lambda: [1, 2])
    sample_steps: int = 20
    sample_size: int = 512
    save_state_every: int = 0  # steps between resumable states; 0 = only on Ctrl-C / crash
    num_workers: int | None = None  # data loader workers; None = automatic

    @property
    def output_name(self) -> str:
        """`<out>-<logic>-<dim>-<lr>-<steps>`, the file stem and TensorBoard prefix."""
        return f"{self.out}-{self.logic}-{self.dim}-{self.lr}-{self.steps}"

    @property
    def learning_rate(self) -> float | None:
        return float(f"{self.lr}e-6") if self.explicit_lr else None  # 44e-6, not 4.4000000000000006e-05

    @property
    def text_encoder_lr(self) -> float | None:
        return None if self.text_encoder_lr_count is None else float(f"{self.text_encoder_lr_count}e-6")

    @property
    def network_args(self) -> dict[str, str]:
        """The `--network_args` of sd-scripts, in its order (conv first, then the algorithm)."""
        args: dict[str, str] = {}
        if self.conv_dim:
            args["conv_dim"] = str(self.conv_dim)
            args["conv_alpha"] = str(self.conv_alpha)
        if self.algo:
            args["algo"] = self.algo
        return args

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready: `None` fields are left out (TOML has no null) and restored as defaults."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainPlan":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CharframeError(f"unknown training plan key(s): {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        tomlio.write(path, {"plan": self.to_dict()})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainPlan":
        data = tomlio.load(path)
        if "plan" not in data:
            raise CharframeError(f"{path}: not a training plan (no [plan] table)")
        return cls.from_dict(data["plan"])


def make_plan(
    logic: str,
    dim: int,
    lr: int,
    steps: int,
    *,
    dataset: str | os.PathLike,
    out: str,
    recipes: dict[str, Any] | None = None,
    **options: Any,
) -> TrainPlan:
    """Resolve a logic name and the run's arguments into a `TrainPlan`.

    `options` are any other `TrainPlan` fields (model, vae, clip_skip, continue_from, output_dir,
    noise_offset, ...); recipe fields may be overridden the same way.
    """
    r = recipes or load_recipes()
    parts = parse_logic(logic, r)
    for name, value in (("dim", dim), ("steps", steps)):
        if int(value) < 1:
            raise CharframeError(f"{name} must be a positive integer, got {value}")
    if int(lr) < 0:
        raise CharframeError(f"lr must be a non-negative integer count of 1e-6, got {lr}")
    if not out or any(c in out for c in '/\\:*?"<>|'):
        raise CharframeError(f"output name {out!r} must be a plain name (no path separators)")
    net, alpha_rule, opt = r["networks"][parts.network], r["alphas"][parts.alpha], r["optimizers"][parts.optimizer]
    dim, lr, steps = int(dim), int(lr), int(steps)
    alpha = _alpha(alpha_rule, dim)
    explicit = bool(opt.get("explicit_lr", True))
    recipe: dict[str, Any] = dict(
        network_module=net["module"],
        algo=net.get("algo"),
        network_alpha=alpha,
        conv_dim=dim if net.get("conv") else None,
        conv_alpha=alpha if net.get("conv") else None,
        optimizer_type=opt["optimizer_type"],
        optimizer_args=dict(opt.get("optimizer_args", {})),
        cpu_fallback=opt.get("cpu_fallback"),
        explicit_lr=explicit,
        text_encoder_lr_count=math.floor(lr * int(opt["text_encoder_lr_percent"]) / 100) if explicit else None,
        lr_scheduler=opt["lr_scheduler"],
        lr_scheduler_num_cycles=int(opt.get("lr_scheduler_num_cycles", 1)),
        **{k: v for k, v in r["always"].items()},
    )
    recipe.update(options)
    for key in ("dataset", "model", "vae", "continue_from", "output_dir", "logging_dir"):
        if isinstance(recipe.get(key), os.PathLike):
            recipe[key] = str(recipe[key])
    return TrainPlan.from_dict(dict(logic=parts.name, dim=dim, lr=lr, steps=steps, dataset=str(dataset), out=out, **recipe))
