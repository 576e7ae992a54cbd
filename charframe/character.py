"""The character file: one TOML per character (`Characters/<keyword>.toml`) that every later step reads.

It says who the character is (keyword, class, prompt, outfits, hair → fill colour, symmetric or not), how its
images are generated (CONVENTIONS §9 defaults), exported and trained (CONVENTIONS §5-6 defaults). Paths in it
are relative to the project root (the folder holding `Characters/`). Example:

    keyword = "krnk"
    class = "girl"
    prompt = "1girl, solo, short black hair, cat ears, red eyes"
    fill = "black"                      # black | white | auto (from the hair's lightness)
    asymmetric = false                  # true: azimuths 5-7 too (mirrored templates)
    [outfits]
    sf = "sailor uniform, pleated skirt"
    [generation]
    model = "LoRAInput/anything-v5.safetensors"
    family = ""                         # "" = from the model file; or sd15, sdxl (aliases: xl, illustrious, noobai, pony)
    sampler = "DPM++ 2M Karras"
    [[generation.controlnet]]
    map = "softedge"
    model = "LoRAInput/control_v11p_sd15_softedge.pth"
    weight = 0.5

Reading it validates every key (type, range, unknown names) and names the file, line and key of the first
problem; nothing is written before a character file reads cleanly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from charframe.dataset.imagesize import image_size
from charframe.dataset.naming import parse_code, subset_folder_name
from charframe.errors import CharframeError
from charframe.families.family import Family, get_family
from charframe.project import WORK_DIR
from charframe.prompt_syntax import check_prompt
from charframe.util import toml as tomlio
from charframe.util.paths import name_problem
from charframe.util.schema import Source, dump, limits, parse, read_toml_file

CHARACTERS_DIR = "Characters"

DEFAULT_NEGATIVE = ("lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
                    "cropped, worst quality, low quality, jpeg artifacts, signature, watermark, blurry")

ControlMap = Literal["softedge", "hed", "depth", "normal", "canny", "openpose", "mask"]


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet: which control image (`softedge` = the template's exact soft-edge map; `hed` = controlnet-aux
    HED run on the template picture; the other names are the template's exact maps), the ControlNet model (file
    or diffusers folder; "" = the tiny random demo ControlNet), its weight and guidance range (fractions of steps)."""

    map: ControlMap = "softedge"
    model: str = ""
    weight: float = field(default=0.5, metadata=limits(min=0, max=2))
    start: float = field(default=0.0, metadata=limits(min=0, max=1))
    end: float = field(default=0.3, metadata=limits(min=0, max=1))


@dataclass(frozen=True)
class Generation:
    """Image generation settings (CONVENTIONS §9): model "" = the tiny random demo model."""

    model: str = ""
    vae: str = ""
    #: the model family: "" = the model file's (and SD1.x for the tiny demo model); "sd15", "sdxl" or an alias
    #: (charframe.families: sd1, xl, illustrious, noobai, pony) to insist on one
    family: str = ""
    #: "" = the model's own (NoobAI-XL v-prediction files say so); "epsilon" or "v_prediction" to override it
    prediction: Literal["", "epsilon", "v_prediction"] = ""
    controlnet: tuple[ControlUnit, ...] = (ControlUnit(),)
    sampler: str = "DPM++ 2M Karras"
    steps: int = field(default=28, metadata=limits(min=1, max=500))
    cfg: float = field(default=10.0, metadata=limits(min=1, max=30))
    size: int = field(default=512, metadata=limits(min=64, max=2048, help="shorter side of the first pass, px"))
    hires_scale: float = field(default=1.5, metadata=limits(min=1, max=4))
    hires_denoise: float = field(default=0.7, metadata=limits(min=0, max=1))
    hires_steps: int = field(default=0, metadata=limits(min=0, max=500, help="0 = same as steps"))
    candidates: int = field(default=4, metadata=limits(min=1, max=64))
    #: rounds of `candidates` new ones (next seeds) for a code whose every candidate is not the character (identity)
    retries: int = field(default=2, metadata=limits(min=0, max=10))
    seed: int = field(default=1234, metadata=limits(min=0, max=2**32 - 1))
    clip_skip: int = field(default=2, metadata=limits(min=1, max=12))
    face_lora_weight: float = field(default=0.8, metadata=limits(min=0, max=2))
    #: controlnet-aux's HED weights (`ControlNetHED.pth` from lllyasviel/Annotators) for map "hed"
    hed_model: str = ""
    #: "" = charframe's default (float16 on a GPU, float32 on CPU); or "float32", "float16", "bfloat16"
    dtype: Literal["", "float32", "float16", "bfloat16"] = ""
    #: WebUI's "Pad prompt/negative prompt": pad the shorter with empty chunks so both run as one UNet batch
    #: (faster when their lengths differ, changes the picture; written as `Pad conds: True`). Off = WebUI's default.
    pad_conds: bool = False


@dataclass(frozen=True)
class Export:
    """Multi-size export (CONVENTIONS §4): sibling subsets `<kw> <class>_f0512` …; never upscaled."""

    sizes: tuple[int, ...] = (512, 768)
    alpha_mask: bool = False
    #: codes left out of the dataset (e.g. ["f24", "b13"]): their images leave it at the next export
    exclude: tuple[str, ...] = ()
    face_repeats: int = field(default=4, metadata=limits(min=1, max=1000))
    body_repeats: int = field(default=2, metadata=limits(min=1, max=1000))


@dataclass(frozen=True)
class StageRecipe:
    """One training stage (CONVENTIONS §6): recipe, dim, lr (in 1e-6), steps, merge preset, compression ratio."""

    logic: str = "Lora3x3A50p-AdamW8"
    dim: int = field(default=128, metadata=limits(min=1, max=1024))
    lr: int = field(default=100, metadata=limits(min=1, max=100000))
    steps: int = field(default=1000, metadata=limits(min=1, max=1000000))
    preset: str = "FACE"
    sv_ratio: float = field(default=16.0, metadata=limits(min=1, max=1e6))
    #: a checkpoint every N steps (`<name>-step00000500.safetensors`), scored to pick the best; unset = the last only
    save_every: int | None = field(default=None, metadata=limits(min=1, max=1000000, help="steps between checkpoints"))


@dataclass(frozen=True)
class PivotalRecipe:
    """`[training.pivotal]`: pivotal tuning, off by default. On, each stage's LoRA is trained with a trigger embedding:
    the face stage learns `<keyword>` (`krnk`), a body stage `<keyword><outfit>` (`krnksf`) while reusing the face
    LoRA's `krnk` as it is, a group its members' body LoRAs' embeddings; they are bundled into the LoRA files.
    `vectors` per trigger, started from `init_text` ("" = the class word), trained at `lr` for the first `stop_at`
    of the steps."""

    enabled: bool = False
    vectors: int = field(default=4, metadata=limits(min=1, max=75))
    init_text: str = ""
    lr: float = field(default=0.03, metadata=limits(min=0, max=10))
    stop_at: float = field(default=0.5, metadata=limits(min=0, max=1))


@dataclass(frozen=True)
class Training:
    face: StageRecipe = StageRecipe()
    body: StageRecipe = StageRecipe(steps=1200, preset="BODY")
    group: StageRecipe = StageRecipe(steps=1600, preset="BODY")
    pivotal: PivotalRecipe = PivotalRecipe()


@dataclass(frozen=True)
class Character:
    keyword: str
    class_: str = field(default="girl", metadata={"toml": "class"})
    prompt: str = ""
    negative: str = DEFAULT_NEGATIVE
    fill: Literal["black", "white", "auto"] = "auto"
    asymmetric: bool = False
    outfits: dict[str, str] = field(default_factory=dict)
    #: pictures of the character (project-relative paths) that identity is judged against; none = the set's medoid
    reference: tuple[str, ...] = ()
    generation: Generation = Generation()
    export: Export = Export()
    training: Training = Training()
    #: where it was read from (not a TOML key); relative paths inside resolve against `root`
    path: Path | None = field(default=None, compare=False, metadata={"skip": True})
    #: the dotted keys the file sets (`generation.size`, `training.face.steps`); None for a record made in code
    given: frozenset[str] | None = field(default=None, compare=False, metadata={"skip": True})

    @property
    def root(self) -> Path:
        """The project root: the folder above `Characters/` (or the file's own folder elsewhere)."""
        if self.path is None:
            return Path.cwd()
        parent = self.path.parent
        return parent.parent if parent.name == CHARACTERS_DIR else parent

    @property
    def azimuths(self) -> tuple[int, ...]:
        """0-4 for a symmetric character, 0-7 for an asymmetric one (5-7 mirror 3-1, CONVENTIONS §2)."""
        return tuple(range(8 if self.asymmetric else 5))

    def resolve(self, value: str) -> Path | None:
        """A path from the file, relative to the project root; "" → None (the built-in default)."""
        if not value:
            return None
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.root / p

    def face_dataset(self) -> str:
        """`4_krnk` (CONVENTIONS §5)."""
        return f"{self.export.face_repeats}_{self.keyword}"

    def body_dataset(self, outfit: str) -> str:
        """`2_krnksf_krnk` (CONVENTIONS §5)."""
        self.outfit_prompt(outfit)
        return f"{self.export.body_repeats}_{self.keyword}{outfit}_{self.keyword}"

    def subset(self, kind: str, size: int, outfit: str = "") -> str:
        """`krnk girl_f0512`, `krnksf girl_b0768`: a multi-size subset folder (CONVENTIONS §4)."""
        return subset_folder_name(f"{self.keyword}{outfit} {self.class_}", kind, size)

    def set_name(self, kind: str, outfit: str = "") -> str:
        """"face", or "body-<outfit>" (body images are per outfit): the name of one image set's work folder."""
        if kind == "f":
            return "face"
        self.outfit_prompt(outfit)
        return f"body-{outfit}"

    def work_dir(self, set_name: str) -> Path:
        """`LoRAWork/<kw>/<set>/`: `raw/` candidates `f12-0.png` …, `clean/` filled RGB, `alpha/` RGBA copies,
        `picks.toml`, contact sheets."""
        return self.root / WORK_DIR / self.keyword / set_name

    def for_family(self, fam: Family) -> "Character":
        """The character with its model family's defaults (`[defaults]` of `data/families/<id>.toml`: SDXL's
        1024 px, sampler, recipes …) for every setting the file leaves out; what the file sets is kept. A record
        made in code counts the settings that differ from charframe's defaults as set."""
        defaults = fam.data.get("defaults", {})
        if not defaults:
            return self
        data = dump(self)
        given = self.given if self.given is not None else _differing(_flat(data), _flat(dump(Character(self.keyword))))
        merged = _merge(data, defaults, given)
        resolved = parse(Character, merged, f"{self.path or self.keyword} (with the {fam.name} defaults)")
        return replace(resolved, path=self.path, given=given)

    def outfit_prompt(self, outfit: str) -> str:
        if outfit not in self.outfits:
            known = ", ".join(self.outfits) or "none defined"
            raise CharframeError(f"{self.path or self.keyword}: no outfit {outfit!r} in [outfits] (known: {known})")
        return self.outfits[outfit]


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested tables as dotted keys (`{"generation": {"size": 512}}` → `{"generation.size": 512}`)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differing(values: dict[str, object], defaults: dict[str, object]) -> frozenset[str]:
    return frozenset(k for k, v in values.items() if defaults.get(k) != v)


def _merge(data: dict, defaults: dict, given: frozenset[str], prefix: str = "") -> dict:
    """`data` with `defaults`' values wherever the dotted key is not in `given` (nested tables merged)."""
    out = dict(data)
    for key, value in defaults.items():
        if isinstance(value, dict):
            out[key] = _merge(dict(out.get(key, {})), value, given, f"{prefix}{key}.")
        elif f"{prefix}{key}" not in given:
            out[key] = value
    return out


def is_keyword(name: str) -> bool:
    """A keyword or outfit name: letters and digits only (it names folders and LoRAs, and joins: krnksf), and a
    usable file name everywhere (`util.paths.name_problem`: not `CON`)."""
    return isinstance(name, str) and bool(name) and all(ch.isalnum() for ch in name) and name_problem(name) is None


def _check(c: Character, src: Source) -> Character:
    def fail(key: str, section: tuple[str, ...], message: str) -> None:
        line = src.line_of(section, key)
        where = f"{src.path}:{line}" if line else src.path
        raise CharframeError(f"{where}: {'.'.join(section + (key,))}: {message}")

    if not is_keyword(c.keyword):
        fail("keyword", (), f"must be letters and digits only (it names folders and LoRAs), got {c.keyword!r}")
    class_problem = ("holds '_', which separates the markers of subset folder names" if "_" in c.class_
                     else name_problem(subset_folder_name(f"{c.keyword} {c.class_}", "f", 512)))
    if class_problem:
        fail("class", (), f"{c.class_!r} {class_problem}; use a plain word like girl "
                          f"(it names the subset folders: {c.keyword} girl_f0512)")
    for name in c.outfits:
        if not is_keyword(name):
            fail(name, ("outfits",), "outfit names must be letters and digits only (they join the keyword: krnksf)")
    for key, section, text in (("prompt", (), c.prompt), ("negative", (), c.negative),
                               *((name, ("outfits",), text) for name, text in c.outfits.items())):
        try:
            check_prompt(text, "")
        except CharframeError as exc:
            fail(key, section, str(exc).removeprefix(": "))
    g = c.generation
    if g.family:
        try:
            get_family(g.family)
        except CharframeError as e:
            fail("family", ("generation",), str(e).split(": ", 1)[1])
    if not g.controlnet:
        fail("controlnet", ("generation",), "needs at least one ControlNet")
    for unit in g.controlnet:
        if unit.start >= unit.end:
            fail("controlnet", ("generation",), f"start ({unit.start}) must be below end ({unit.end})")
    if not c.export.sizes or any(s < 64 or s > 4096 or s % 8 for s in c.export.sizes):
        fail("sizes", ("export",), f"must be multiples of 8 from 64 to 4096, got {list(c.export.sizes)}")
    for stage in ("face", "body", "group"):
        r: StageRecipe = getattr(c.training, stage)
        if r.save_every is not None and r.save_every > r.steps:
            fail("save_every", ("training", stage), f"{r.save_every} is more than the {r.steps} steps: no checkpoint "
                                                    "would be saved before the last step; use a smaller number, or leave it out")
    for ref in c.reference:
        p = c.resolve(ref)
        if p is None or not p.is_file():
            fail("reference", (), f"{ref!r}: no such picture ({p}); name pictures of the character, relative to the "
                                  "project folder")
        try:
            image_size(p)  # the header only: a text file or a damaged picture is caught here, not mid-pick
        except CharframeError:
            fail("reference", (), f"{ref!r}: not a readable PNG, JPEG or WebP picture ({p}); replace it with a "
                                  "picture of the character")
    bad = [x for x in c.export.exclude if parse_code(x) is None or parse_code(x).code != x]
    if bad:
        fail("exclude", ("export",), f"{bad[0]!r} is not an image code like f24 or b13")
    return c


def load_character(path: str | os.PathLike) -> Character:
    """Read and validate a character file; any problem is one `CharframeError` naming file, line and key."""
    path = Path(path)
    data, src = read_toml_file(path, "character file")
    character = parse(Character, data, src)
    return _check(replace(character, path=path.absolute(), given=frozenset(_flat(data))), src)


def character_toml(c: Character) -> str:
    """The character as TOML text (every setting written out): `load_character` reads back an equal record."""
    return tomlio.dumps(dump(c))


def find_characters(root: str | os.PathLike) -> list[Path]:
    """Character files of a project: `Characters/*.toml` except group files (`*.group.toml`), sorted."""
    folder = Path(root) / CHARACTERS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.toml") if p.is_file() and not p.name.endswith(".group.toml"))
