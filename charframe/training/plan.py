"""Training recipes: logic names (CONVENTIONS §6) → a typed, saved `TrainPlan`.

`Lora3x3A50p-AdamW8` names a network, an alpha rule and an optimizer; the rules live in
`charframe/data/recipes.toml`, so the built-in trainer and the kohya command line read the same
numbers. A `TrainPlan` is everything one training run needs, as small records (network, optimizer,
recipe, io, runtime, sampling, state) so each part of the trainer receives only its own; it round-trips
to TOML (one table per record, read through `charframe.util.schema`) and is saved beside the output so a
LoRA file can always be traced back to the exact settings.
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
from typing import Any, Literal

from charframe.errors import CharframeError
from charframe.util.paths import name_problem
from charframe.util import toml as tomlio
from charframe.util.schema import Source, dump, limits, parse, read_text_file


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


def _option(name: str, **meta: Any) -> dict[str, Any]:
    """Field metadata: the flat option name (make_plan's keyword, the old flat plan key) plus limits."""
    return {"option": name, **meta}


@dataclass(frozen=True)
class NetworkRecipe:
    """`[plan.network]`: what is trained (the `--network_*` arguments of sd-scripts)."""

    dim: int = field(metadata=limits(min=1))
    module: str = field(default="networks.lora", metadata=_option("network_module"))
    algo: str | None = None
    alpha: int = field(default=1, metadata=_option("network_alpha", min=0))
    conv_dim: int | None = field(default=None, metadata=limits(min=1))
    conv_alpha: int | None = field(default=None, metadata=limits(min=0))

    @property
    def args(self) -> dict[str, str]:
        """The `--network_args` of sd-scripts, in its order (conv first, then the algorithm)."""
        args: dict[str, str] = {}
        if self.conv_dim:
            args["conv_dim"] = str(self.conv_dim)
            args["conv_alpha"] = str(self.conv_alpha)
        if self.algo:
            args["algo"] = self.algo
        return args


@dataclass(frozen=True)
class OptimizerRecipe:
    """`[plan.optimizer]`: the optimizer, its rates and schedule."""

    lr: int = field(metadata=limits(min=0, help="learning rate as an integer count of 1e-6"))
    type: str = field(default="AdamW8bit", metadata=_option("optimizer_type"))
    args: dict[str, Any] = field(default_factory=dict, metadata=_option("optimizer_args"))
    cpu_fallback: str | None = None
    explicit_lr: bool = True
    text_encoder_lr_count: int | None = field(default=None, metadata=limits(min=0))
    scheduler: str = field(default="cosine_with_restarts", metadata=_option("lr_scheduler"))
    scheduler_cycles: int = field(default=1, metadata=_option("lr_scheduler_num_cycles", min=1))
    max_grad_norm: float = field(default=1.0, metadata=limits(min=0))

    @property
    def learning_rate(self) -> float | None:
        return float(f"{self.lr}e-6") if self.explicit_lr else None  # 44e-6, not 4.4000000000000006e-05

    @property
    def text_encoder_lr(self) -> float | None:
        return None if self.text_encoder_lr_count is None else float(f"{self.text_encoder_lr_count}e-6")


@dataclass(frozen=True)
class Recipe:
    """`[plan.recipe]`: how each step is computed (the loss and its inputs)."""

    steps: int = field(metadata=limits(min=1))
    seed: int = 31337
    clip_skip: int = field(default=2, metadata=limits(min=1))
    max_token_length: Literal[150, 225] | None = None  # None = 75 tokens; 150 or 225 chunk like sd-scripts
    noise_offset: float = field(default=0.0, metadata=limits(min=0))
    prior_loss_weight: float = field(default=1.0, metadata=limits(min=0))
    #: None = the model family's choice (SD1.x: yes; SDXL: no, the UNet only, as sd-scripts' usual SDXL runs)
    train_text_encoder: bool | None = None
    #: sd-scripts' --min_snr_gamma (0 = off; 5 is the paper's value) and --debiased_estimation_loss
    min_snr_gamma: float = field(default=0.0, metadata=limits(min=0))
    debiased_estimation: bool = False
    #: captions whose frozen text encoders' outputs are kept (0 = encode every step)
    text_cache: int = field(default=4096, metadata=limits(min=0))


@dataclass(frozen=True)
class TrainIO:
    """`[plan.io]`: what is read and where everything is written."""

    dataset: str  # the dataset TOML
    out: str  # output name
    output_dir: str = "LoRAOutput"
    logging_dir: str = "LoRALog"
    model: str | None = None  # None: the tiny demo model
    vae: str | None = None
    family: str | None = None  # None: the model's own (charframe.families: sd15, sdxl, or an alias)
    prediction: Literal["epsilon", "v_prediction"] | None = None  # None: the model's own
    continue_from: str | None = None
    save_model_as: str = "safetensors"
    save_precision: Literal["fp16", "bf16", "float", "fp32"] = "fp16"


@dataclass(frozen=True)
class Runtime:
    """`[plan.runtime]`: how the run uses the machine (same result, different speed or memory)."""

    mixed_precision: Literal["fp16", "bf16", "no"] = "fp16"
    gradient_checkpointing: bool = True
    attention: Literal["sdpa", "xformers"] = "sdpa"
    persistent_data_loader_workers: bool = True
    num_workers: int | None = field(default=None, metadata=limits(min=0))  # None = automatic


@dataclass(frozen=True)
class Sampling:
    """`[plan.sampling]`: sample images during training; `every = 0` = none."""

    every: int = field(default=0, metadata=_option("sample_every", min=0))
    prompts: tuple[str, ...] = field(default=(), metadata=_option("sample_prompts"))
    seeds: tuple[int, ...] = field(default=(1, 2), metadata=_option("sample_seeds"))
    steps: int = field(default=20, metadata=_option("sample_steps", min=1))
    size: int = field(default=512, metadata=_option("sample_size", min=8))

    @property
    def enabled(self) -> bool:
        return bool(self.every and self.prompts)


@dataclass(frozen=True)
class Pivotal:
    """`[plan.pivotal]`: pivotal tuning — a trigger embedding trained together with the LoRA; off without a trigger.

    `trigger` is the caption word the embedding replaces (its name in WebUI: the character keyword); `vectors` of
    it, started from `init_text` ("" = the word after the trigger in the dataset's class tokens, "krnk girl" →
    "girl"), trained at `lr` (AdamW: the rate its family uses — cyberharem 0.03 for 4 vectors next to UNet 1e-4)
    for the first `stop_at` of the run, then frozen (OneTrainer and diffusers' advanced script stop at half).
    `reuse`: LoRA files with bundled embeddings, or embedding files, whose embeddings the captions also call,
    kept fixed (a body stage reuses its face LoRA's trigger). Every embedding used is bundled into the LoRA."""

    trigger: str | None = field(default=None, metadata=_option("pivotal_trigger"))
    vectors: int = field(default=4, metadata=_option("pivotal_vectors", min=1, max=75))
    init_text: str = field(default="", metadata=_option("pivotal_init_text"))
    lr: float = field(default=0.03, metadata=_option("pivotal_lr", min=0))
    stop_at: float = field(default=0.5, metadata=_option("pivotal_stop_at", min=0, max=1))
    reuse: tuple[str, ...] = field(default=(), metadata=_option("pivotal_reuse"))

    @property
    def enabled(self) -> bool:
        """Embeddings take part in the run (a trigger is trained, or reused ones are called)."""
        return bool(self.trigger or self.reuse)

    def stop_step(self, steps: int) -> int:
        """The last optimizer step (1-based) that updates the trigger: ⌊steps · stop_at⌋."""
        return int(steps * self.stop_at)


@dataclass(frozen=True)
class StateSaving:
    """`[plan.state]`: resumable states (`save_every = 0` = only on Ctrl-C, SIGTERM or a crash) and checkpoints:
    with `checkpoint_every = N` the LoRA of every N-th step is saved as `<name>-step00000500.safetensors` (sd-scripts'
    `--save_every_n_steps` names), each with a resumable state, for the score step to choose from."""

    save_every: int = field(default=0, metadata=_option("save_state_every", min=0))
    checkpoint_every: int = field(default=0, metadata=_option("save_every_n_steps", min=0))


#: The sections of a plan, in file order: (attribute, record class).
SECTIONS: tuple[tuple[str, type], ...] = (
    ("network", NetworkRecipe), ("optimizer", OptimizerRecipe), ("recipe", Recipe), ("io", TrainIO),
    ("runtime", Runtime), ("sampling", Sampling), ("state", StateSaving), ("pivotal", Pivotal),
)


def _flat_names() -> dict[str, tuple[str, str]]:
    """Flat option name → (section, field): `sample_every` → ("sampling", "every")."""
    out = {}
    for section, cls in SECTIONS:
        for f in dataclasses.fields(cls):
            out[f.metadata.get("option", f.name)] = (section, f.name)
    return out


FLAT_NAMES = _flat_names()


@dataclass(frozen=True)
class TrainPlan:
    """One training run: the user's arguments plus the recipe they select, resolved, as small records."""

    logic: str  # canonical letter case; the old spelling "AdaFacotor" is kept if the user wrote it
    network: NetworkRecipe
    optimizer: OptimizerRecipe
    recipe: Recipe
    io: TrainIO
    runtime: Runtime = field(default_factory=Runtime)
    sampling: Sampling = field(default_factory=Sampling)
    state: StateSaving = field(default_factory=StateSaving)
    pivotal: Pivotal = field(default_factory=Pivotal)

    @property
    def output_name(self) -> str:
        """`<out>-<logic>-<dim>-<lr>-<steps>`, the file stem and TensorBoard prefix."""
        return f"{self.io.out}-{self.logic}-{self.network.dim}-{self.optimizer.lr}-{self.recipe.steps}"

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready nested tables; `None` fields are left out (TOML has no null) and restored as defaults, and so
        is `[plan.pivotal]` while off (a plan without it reads, and records, exactly as before it existed)."""
        data = dump(self)
        if self.pivotal == Pivotal():
            data.pop("pivotal", None)
        return data

    def flat(self) -> dict[str, Any]:
        """`{option name: value}` (None left out): what make_plan takes, and what --resume compares."""
        out: dict[str, Any] = {"logic": self.logic}
        for name, (section, attr) in FLAT_NAMES.items():
            value = getattr(getattr(self, section), attr)
            if value is not None:
                out[name] = value
        return out

    def updated(self, **options: Any) -> "TrainPlan":
        """A copy with some values changed, by their flat option names (`dim=8`, `sample_every=2`)."""
        return TrainPlan.from_options({**self.flat(), **options})

    @classmethod
    def from_options(cls, options: dict[str, Any], source: str = "training plan") -> "TrainPlan":
        """A plan from flat option names (make_plan's keywords; also the flat `[plan]` of older files)."""
        unknown = sorted(set(options) - set(FLAT_NAMES) - {"logic"})
        if unknown:
            raise CharframeError(f"{source}: unknown training plan key(s): {', '.join(unknown)}")
        nested: dict[str, Any] = {"logic": options.get("logic")}
        for name, value in options.items():
            if name != "logic" and value is not None:
                section, attr = FLAT_NAMES[name]
                nested.setdefault(section, {})[attr] = _plain(value)
        return cls.from_dict({k: v for k, v in nested.items() if v is not None}, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Source | str = "training plan") -> "TrainPlan":
        """A plan from its TOML tables; a flat table (charframe ≤ 0.x files) is read by option names."""
        if data and not any(isinstance(data.get(s), dict) for s, _ in SECTIONS):
            return cls.from_options(dict(data), source.path if isinstance(source, Source) else source)
        return parse(cls, data, source, section=("plan",))

    def save(self, path: str | os.PathLike) -> Path:
        tomlio.write(path, {"plan": self.to_dict()})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainPlan":
        text = read_text_file(path, "training plan")
        try:
            data = tomlio.loads(text)
        except tomlio.TOMLDecodeError as e:
            raise CharframeError(f"{path}: not valid TOML ({e})") from None
        if not isinstance(data.get("plan"), dict):
            raise CharframeError(f"{path}: not a training plan (no [plan] table)")
        return cls.from_dict(data["plan"], Source(str(path), text))


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


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

    `options` are any other plan values by their flat option names (model, vae, clip_skip, continue_from,
    output_dir, noise_offset, sample_every, ...; see `FLAT_NAMES`); recipe values may be overridden the same way.
    """
    r = recipes or load_recipes()
    parts = parse_logic(logic, r)
    for name, value in (("dim", dim), ("steps", steps)):
        if int(value) < 1:
            raise CharframeError(f"{{param}} must be a positive integer, got {value}", param=name)
    if int(lr) < 0:
        raise CharframeError(f"{{param}} must be a non-negative integer count of 1e-6, got {lr}", param="lr")
    problem = name_problem(out) if isinstance(out, str) else "is not text"
    if problem:
        raise CharframeError(f"output name {out!r} must be a plain name (no path separators): it {problem}", param="out")
    every = options.get("save_every_n_steps")
    if every is not None and not (isinstance(every, int) and 1 <= every <= int(steps)):
        raise CharframeError(f"{{param}} must be a number of steps from 1 to the {int(steps)} steps of the run (a "
                             f"checkpoint every N steps), got {every}", param="save_every")
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
    return TrainPlan.from_options(dict(logic=parts.name, dim=dim, lr=lr, steps=steps, dataset=str(dataset), out=out, **recipe))


def trains_text_encoder(recipe: Any, family: Any) -> bool:
    """The plan's choice, or the family's (`[training] train_text_encoder`: SD1.x yes, SDXL no)."""
    if recipe.train_text_encoder is not None:
        return bool(recipe.train_text_encoder)
    return bool(family.data.get("training", {}).get("train_text_encoder", True))
