"""`generate_set`: the candidate images of one character's face or body set, from the pose templates.

For each code (f00 … f24, or b…), N candidates with seeds `seed + i` go to `LoRAWork/<kw>/<set>/raw/<code>-<i>.png`,
each carrying WebUI's `parameters` chunk; `contact.png` beside `raw/` shows codes × candidates. Everything that
can be wrong with the input (character file, sampler, templates, model files) is checked before the first image;
each image is written atomically as it finishes, so an interrupted run keeps all finished images.

Each candidate is recorded (`raw/.charframe-generate.json`, `util.manifest`) with exactly what it was made from:
its prompt and seed, the generation settings, and the content of the model, VAE, ControlNet, face LoRA and
control-map files it used. A rerun makes a candidate again when any of that changed (a new face LoRA regenerates
every body candidate; a redrawn f12 map only f12's), never because a file of that name is missing or present:
a candidate it made before and would now make differently is moved to `LoRAWork/replaced/` first, and the
candidates of codes or numbers no longer asked for go there too. A picture placed or edited by hand is kept
while its settings and inputs are unchanged. Without a model nothing is loaded when every candidate is current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np

from charframe import __version__
from charframe.character import Character, ControlMap, ControlUnit
from charframe.dataset.naming import ImageCode, parse_code
from charframe.dataset.sheets import Cell, Tile, draw_sheet
from charframe.errors import CharframeError
from charframe.families.family import get_family, require
from charframe.generation.code_prompt import code_prompt
from charframe.generation.control import HED, control_image, hed_detector, template_image
from charframe.generation.batch import batch_size
from charframe.generation.conditioning import TextEncoder
from charframe.generation.embeddings import PromptEmbeddings, prompt_embeddings, ti_field, with_triggers
from charframe.generation.face_lora import apply_lora, lora_short_hash
from charframe.generation.families import (
    both_passes, conditioning as family_conditioning, first_pass_sizes, make_runner, text_encoder,
)
from charframe.generation.pnginfo import controlnet_field, parameters_text, webui_module, write_png
from charframe.generation.passes import PassSettings, hires_size
from charframe.generation.samplers import Choice, check_available, find_sampler
from charframe.models.checkpoint import SAFETENSORS_SUFFIXES
from charframe.models.clip import check_clip_skip
from charframe.models.controlnet import load_controlnet
from charframe.models.controlnet_names import map_mismatch, name_hints
from charframe.models.detect import character_family, family_of_model
from charframe.models.load import load_sd
from charframe.generation.pnginfo import read_parameters
from charframe.project import project_dirs
from charframe.prompt_syntax import check_prompt
from charframe.util.files import atomic_write_bytes
from charframe.util.manifest import Check, Manifest, decide

log = logging.getLogger(__name__)

RAW = "raw"
CONTACT = "contact.png"
MANIFEST = ".charframe-generate.json"
KIND_NAMES = {"f": "face", "b": "body", "face": "f", "body": "b"}


@dataclass
class GenerateResult:
    """What a run wrote: new images, current ones it left alone, hand-placed ones it kept, what it moved to the
    recoverable `replaced/` folder, the contact sheet and the time taken."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0  # of `seconds`: loading the models (the rest is per-image work)
    contact: Path | None = None
    work_dir: Path | None = None

    @property
    def images_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def _kind(kind: str) -> str:
    k = KIND_NAMES.get(kind, kind) if len(kind) > 1 else kind
    if k not in ("f", "b"):
        raise CharframeError(f"unknown set {kind!r} for {{param}}; use face (f) or body (b)", param="kind")
    return k


def set_codes(character: Character, kind: str, codes: Sequence[str] | None = None) -> list[ImageCode]:
    """The codes to generate: every elevation × the character's azimuths, or the given ones (checked)."""
    if not codes:
        return [ImageCode(kind, e, a) for e in range(3) for a in character.azimuths]
    out = []
    for text in codes:
        code = parse_code(text.strip())
        if code is None or code.kind != kind or code.rest:
            raise CharframeError(
                f"{text!r} in {{param}} is not a {KIND_NAMES[kind]}-set code like {kind}12 "
                f"({kind}<elevation 0-2><azimuth 0-7>)", param="codes")
        if code.azimuth not in character.azimuths:
            log.warning("%s: azimuth %d is for asymmetric characters (this one has asymmetric = false); made anyway",
                        code.code, code.azimuth)
        out.append(ImageCode(code.kind, code.elevation, code.azimuth))
    return list(dict.fromkeys(out))


def control_units(character: Character, control: str | None) -> tuple[ControlUnit, ...]:
    """The character's ControlNet units, with their control maps replaced by `control` ("hed", "softedge,depth")."""
    units = character.generation.controlnet
    if not control:
        return units
    maps = [m.strip() for m in control.split(",") if m.strip()]
    known = get_args(ControlMap)
    bad = [m for m in maps if m not in known]
    if bad:
        raise CharframeError(f"unknown control map {bad[0]!r} in {{param}}; known: {', '.join(known)}", param="control")
    if len(maps) > len(units):
        raise CharframeError(
            f"{{param}} names {len(maps)} maps but {character.path}: generation.controlnet has {len(units)} "
            "ControlNet(s); add a [[generation.controlnet]] table per map (each with its model)", param="control")
    return tuple(replace(u, map=maps[i]) if i < len(maps) else u for i, u in enumerate(units))


def template_dir(character: Character, kind: str) -> Path:
    dirs = project_dirs(character.root)
    return dirs.face_templates if kind == "f" else dirs.body_templates


def _check_templates(set_dir: Path, codes: list[ImageCode], units: Sequence[ControlUnit]) -> None:
    """Every control map (or, for hed, template picture) exists and reads, before any model is loaded."""
    for code in codes:
        for unit in units:
            template_image(set_dir, code, None if unit.map == HED else unit.map)


def _device_dtype(character: Character, device: str | None) -> tuple[str, Any]:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = character.generation.dtype or ("float16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, name)


@dataclass
class _Loaded:
    runner: Any  # passes.Runner or sdxl.SDXLRunner (generation.families.make_runner)
    comps: Any
    fields: dict[str, object]
    hed: Any
    lora_tag: str
    encode: TextEncoder
    embeddings: Any = None  # the EmbeddingSet prompts are encoded with (folder + the face LoRA's bundle)
    sizes: list[tuple[int, int]] | None = None  # the family's first-pass sizes (SDXL's buckets), None = SD1.x's rule


def _check_controlnet_name(path: Path | None, unit: ControlUnit, prediction: str, where: str) -> None:
    """Warn when a ControlNet's name says it was trained on another kind of map, or for the other prediction type
    (NoobAI-XL's `eps-…`/`v-…` releases)."""
    if path is None:
        return
    hints = name_hints(path.name)
    if map_mismatch(hints, unit.map):
        log.warning("%s: %s; the unit gives it %s maps (%s)", path.name,
                    f"a {hints.preprocessor} ControlNet" if hints.map else f"a {hints.preprocessor} ControlNet, "
                    "which no template map matches", unit.map, where)
    if hints.prediction and hints.prediction != prediction:
        log.warning("%s: made for %s models, the base model is %s; use the ControlNet of its own release",
                    path.name, hints.prediction.replace("_", "-"), prediction.replace("_", "-"))


def _load(character: Character, kind: str, units: Sequence[ControlUnit], face_lora: Path | None,
          device: str, dtype: Any, embeddings: PromptEmbeddings | None = None) -> _Loaded:
    g = character.generation
    model = character.resolve(g.model)
    where = str(model or f"{character.path}: generation.model")
    if model is None or (model.exists() and (model.is_dir() or model.suffix.lower() in SAFETENSORS_SUFFIXES)):
        # the header says the family: refuse before a large model loads (a pickle is checked once loaded)
        require(family_of_model(model) if model is not None else get_family(g.family or None), "generate", where)
    comps = load_sd(model, character.resolve(g.vae), dtype=dtype, device=device, family=g.family or None,
                    prediction=g.prediction or None)
    require(get_family(comps.family), "generate", where)
    check_clip_skip(g.clip_skip, comps.text_encoder, f"{character.path}: generation.clip_skip")
    lora_tag, lora_hashes = "", ""
    if face_lora is not None:
        encoders = comps.text_encoders if len(comps.text_encoders) > 1 else comps.text_encoder
        apply_lora(comps.unet, encoders, face_lora, g.face_lora_weight)
        lora_tag = f"<lora:{face_lora.stem}:{g.face_lora_weight:g}>"
        lora_hashes = f"{face_lora.stem.translate(str.maketrans('', '', ':,'))}: {lora_short_hash(face_lora)}"
    elif kind == "b":
        log.warning("body set without the face LoRA: train the face set first and pass its LoRA for consistent faces")
    controlnets, labels, wheres = [], [], []
    loaded: dict[Path | None, tuple[Any, Any]] = {}
    for i, unit in enumerate(units):
        path = character.resolve(unit.model)
        wheres.append(str(path) if path is not None else f"{character.path}: generation.controlnet {i + 1}")
        if path is None or path not in loaded:  # a file two units share is loaded once (a union model)
            loaded[path] = load_controlnet(path, dict(comps.unet.config), dtype=dtype, device=device)
        model, info = loaded[path]
        _check_controlnet_name(path, unit, comps.noise_scheduler.config.prediction_type,
                               f"{character.path}: generation.controlnet {i + 1}")
        controlnets.append(model)
        labels.append(info.label())
    choice = _sampler(character)
    runner = make_runner(comps, controlnets, choice, [u.map for u in units], wheres)
    clip = family_conditioning(comps.family) == "clip"  # textual inversion and padding: SD1.x's (SDXL: apart)
    lookup = embeddings.lookup(comps.tokenizer, comps.text_encoder) if embeddings is not None and clip else None
    encode = TextEncoder(text_encoder(comps, g.clip_skip, lookup))
    if g.pad_conds and clip:
        runner.empty = encode("")
    hed = None
    if any(u.map == HED for u in units):
        hed_path = character.resolve(g.hed_model)
        if hed_path is None and comps.info.get("source") != "tiny":
            raise CharframeError(f"{character.path}: generation.hed_model is empty; the hed control map needs "
                                 "controlnet-aux's ControlNetHED.pth (lllyasviel/Annotators)")
        hed = hed_detector(hed_path)
    model_hash = str(comps.info.get("ss_new_sd_model_hash", ""))[:10]
    fields: dict[str, object] = {
        "Steps": g.steps, **choice.infotext_fields(), "CFG scale": g.cfg,
        "Model hash": "" if model_hash == "IsADirecto" else model_hash,
        "Model": Path(str(comps.info.get("model_name", "model"))).stem, "VAE": comps.info.get("ss_vae_name", ""),
        "Clip skip": g.clip_skip, "RNG": "CPU",
    }
    for i, (unit, label) in enumerate(zip(units, labels)):
        module = webui_module(unit.map)
        fields[f"ControlNet {i}"] = controlnet_field(module, label, unit.weight, unit.start, unit.end,
                                                     g.size if module != "none" else -1)
    fields["Lora hashes"] = lora_hashes
    return _Loaded(runner, comps, fields, hed, lora_tag, encode, lookup, first_pass_sizes(comps.family, g.size))


def _sampler(character: Character) -> Choice:
    """The character's sampler, checked (name, schedule, needed package) before anything loads."""
    where = f"{character.path}: generation.sampler"
    choice = find_sampler(character.generation.sampler, where)
    check_available(choice, where)
    return choice


def _files_of(path: Path | None) -> list[Path]:
    """A model given as a file, or every file of a diffusers folder (hidden ones aside)."""
    if path is None:
        return []
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                             p.relative_to(path).parts))
    return [path]


def _map_file(set_dir: Path, code: ImageCode, map_name: str | None) -> Path:
    """The file `template_image` reads for a code's map (or picture): its own, or the mirrored source of 5-7."""
    folder = set_dir if map_name is None else set_dir / "control" / map_name
    own = folder / f"{code.code}.png"
    return own if own.is_file() or code.azimuth <= 4 else folder / f"{code.kind}{code.elevation}{8 - code.azimuth}.png"


def _recipe(character: Character, units: Sequence[ControlUnit], face_lora: Path | None, kind: str) -> tuple[dict, list[Path]]:
    """(settings, files) every candidate of the set depends on, besides its own prompt, seed and control maps."""
    g = character.generation
    settings = {
        "negative": character.negative, "sampler": g.sampler, "steps": g.steps, "cfg": g.cfg, "size": g.size,
        "hires": [g.hires_scale, g.hires_denoise, g.hires_steps] if g.hires_scale > 1 else None,
        "clip_skip": g.clip_skip, "dtype": g.dtype, "model": "" if g.model else "tiny demo model",
        "units": [[u.map, u.weight, u.start, u.end, "" if u.model else "tiny"] for u in units],
        "face_lora_weight": g.face_lora_weight if face_lora is not None else None,
    }
    files = _files_of(character.resolve(g.model)) + _files_of(character.resolve(g.vae))
    for u in units:
        files += _files_of(character.resolve(u.model))
    if any(u.map == HED for u in units):
        files += _files_of(character.resolve(g.hed_model))
    if face_lora is not None:
        files.append(face_lora)
    return settings, files


def _ours(path: Path) -> bool:
    """Whether an unrecorded candidate was made by charframe (its PNG parameters say so): then it is replaced."""
    try:
        return "Version: charframe" in read_parameters(path)
    except (OSError, ValueError, CharframeError):
        return False


def _retire_unwanted(manifest: Manifest, work: Path, wanted: set[str], recycler, result: GenerateResult) -> None:
    """Candidates charframe made that the set no longer asks for (a code gone, fewer candidates) → `replaced/`."""
    for name in manifest.names():
        if name in wanted:
            continue
        path = work / name
        if path.is_file() and manifest.check(name, inputs=[], params=None).file == "ours":
            result.replaced.append(recycler.recycle(path))
        manifest.forget(name)
    for path in sorted((work / RAW).glob("*.png")):
        name = f"{RAW}/{path.name}"
        if name not in wanted and name not in manifest.outputs and _ours(path):
            result.replaced.append(recycler.recycle(path))


def _write_contact(work: Path, title: str, subtitle: str, codes: list[ImageCode], n: int, set_dir: Path) -> Path:
    """contact.png: elevation rows × azimuth columns, in each cell the template then candidates #0 … #n-1."""
    def template(code: ImageCode) -> np.ndarray | None:
        try:
            return template_image(set_dir, code, None)
        except CharframeError:
            return None

    cells = [Cell(c.code, (Tile(template(c), "template", missing="no template"),
                           *(Tile(work / RAW / f"{c.code}-{i}.png", f"#{i}", missing="not generated") for i in range(n))))
             for c in codes]
    atomic_write_bytes(work / CONTACT, draw_sheet(title, cells, subtitle=subtitle, kind=codes[0].kind if codes else None).png())
    return work / CONTACT


def generate_set(
    character: Character,
    kind: str,
    *,
    outfit: str = "",
    codes: Sequence[str] | None = None,
    candidates: int | None = None,
    face_lora: str | Path | None = None,
    control: str | None = None,
    progress: bool = True,
    device: str | None = None,
    batch: int | None = None,
    first: int = 0,
) -> GenerateResult:
    """Generate the missing candidates of one set (`kind` "f"/"face" or "b"/"body" with `outfit`). `batch`: the
    candidates of one code made at once (None: from the GPU's memory, 1 on the CPU); the pictures are the same
    whatever the batch.

    `first`: the number (and seed offset) of the first candidate: a pick retry asks for `candidates` more with the
    next seeds (`codes=[...], first=4`). Such candidates stay, while current, when the whole set is generated."""
    from tqdm import tqdm

    start = time.perf_counter()
    kind = _kind(kind)
    character = character.for_family(character_family(character))  # SDXL's sizes, sampler … where the file is silent
    g = character.generation
    n = g.candidates if candidates is None else candidates
    if n < 1:
        raise CharframeError("{param} must be at least 1", param="candidates")
    if batch is not None and batch < 1:
        raise CharframeError("{param} must be at least 1", param="batch")
    if first < 0:
        raise CharframeError("{param} must be 0 or more", param="first")
    work = character.work_dir(character.set_name(kind, outfit))
    code_list = set_codes(character, kind, codes)
    units = control_units(character, control)
    _sampler(character)
    for code in code_list:
        check_prompt(code_prompt(character, code, outfit), f"{character.path}: the prompt of {code.code}")
    set_dir = template_dir(character, kind)
    _check_templates(set_dir, code_list, units)
    lora_path = Path(face_lora).expanduser() if face_lora else None
    used = prompt_embeddings(character.root, [], [lora_path] if lora_path else [])  # read and checked: no model yet
    prompts = {c: with_triggers(code_prompt(character, c, outfit), used.bundled) for c in code_list}
    used = used.calling(character.root, [*prompts.values(), character.negative])
    result = GenerateResult(work_dir=work)
    settings_common, files = _recipe(character, units, lora_path, kind)
    files += [Path(e.source) for e in used.files]  # an edited embedding the prompts call makes the images again
    manifest = Manifest.load(work / MANIFEST)
    recycler = project_dirs(character.root).recycler()
    todo: list[tuple[ImageCode, int, Path]] = []
    wanted: set[str] = set()
    retried = _retry_numbers(manifest, n) if first == 0 else {}
    # a retry's candidates are recorded as such: a candidate left from a larger `candidates` is not one (retired)
    retry = {"retry": True} if first else {}
    for code in code_list:
        prompt = prompts[code]
        maps = sorted({_map_file(set_dir, code, None if u.map == HED else u.map) for u in units})
        for i in range(first, first + n):
            name = f"{RAW}/{code.code}-{i}.png"
            wanted.add(name)
            path = work / name
            params = {"prompt": prompt, "seed": g.seed + i, **settings_common, **retry}
            check = manifest.check(name, inputs=files + maps, params=params)
            if check.file == "unknown" and _ours(path):
                check = Check("ours", False)  # made by an earlier charframe without a record: made again
            action = decide(check)
            if action == "skip":
                result.skipped.append(path)
                continue
            if action == "keep":
                result.kept.append(path)
                continue
            if action == "replace":
                result.replaced.append(recycler.recycle(path))
            todo.append((code, i, path))
        for i in retried.get(code.code, ()):  # a pick retry's candidates: kept while current, else retired
            name = f"{RAW}/{code.code}-{i}.png"
            params = {"prompt": prompt, "seed": g.seed + i, **settings_common, "retry": True}
            if manifest.check(name, inputs=files + maps, params=params) == Check("ours", True):
                wanted.add(name)
                result.skipped.append(work / name)
    if codes is None and candidates is None:
        _retire_unwanted(manifest, work, wanted, recycler, result)
    manifest.save()
    if result.kept:
        log.info("%s: %d picture(s) placed or edited by hand kept (%s)", work / RAW, len(result.kept),
                 ", ".join(p.name for p in result.kept[:4]) + (" …" if len(result.kept) > 4 else ""))
    if result.replaced:
        log.info("%s: %d earlier candidate(s) moved to %s", work / RAW, len(result.replaced), recycler.folder())
    title = f"{character.keyword} {character.set_name(kind, outfit)}: {len(code_list)} codes × {n} candidates"
    subtitle = (f"candidate #i has seed {g.seed} + i; {g.sampler}, {g.steps} steps, CFG {g.cfg:g}; "
                f"template first in each cell. Next: charframe clean, then pick")
    shown = first + n
    if not todo:
        result.contact = _write_contact(work, title, subtitle, code_list, shown, set_dir)
        result.seconds = time.perf_counter() - start
        return result
    device, dtype = _device_dtype(character, device)
    loading = time.perf_counter()
    loaded = _load(character, kind, units, lora_path, device, dtype, used)
    result.load_seconds = time.perf_counter() - loading
    settings = PassSettings(g.steps, g.cfg, tuple(u.weight for u in units), tuple(u.start for u in units),
                            tuple(u.end for u in units), g.hires_scale, g.hires_denoise, g.hires_steps, g.pad_conds)
    hires = (g.hires_steps or g.steps) if g.hires_scale > 1 else 0
    bar = tqdm(total=len(todo), unit="img", desc=f"generate {character.keyword} {KIND_NAMES[kind]}", disable=not progress)
    try:
        current = None
        for code, chunk in _batches(todo, batch, loaded.runner, device, g, kind):
            if code != current:  # a code's conditioning, control maps (HED runs a network) once, for all its batches
                current, prompt = code, prompts[code]
                conds = both_passes(loaded.comps, prompt, character.negative, loaded.runner.choice, g.steps, hires,
                                    loaded.encode)
                ti = ti_field(prompt, character.negative, loaded.comps.tokenizer, loaded.embeddings,
                              loaded.runner.choice.sampler.total_steps(g.steps))
                controls = [control_image(set_dir, code, u.map, g.size, loaded.hed, loaded.sizes) for u in units]
                hi_controls = None
                if g.hires_scale > 1:
                    w, h = hires_size(*controls[0].size, g.hires_scale)
                    exact = [(w, h)] if loaded.sizes else None
                    hi_controls = [control_image(set_dir, code, u.map, min(w, h), loaded.hed, exact) for u in units]
                maps = sorted({_map_file(set_dir, code, None if u.map == HED else u.map) for u in units})
            seeds = [g.seed + i for i, _ in chunk]
            if len(chunk) == 1:
                images = [loaded.runner.image(conds, None, controls, seeds[0], settings, hi_controls)]
            else:
                images = loaded.runner.images(conds, None, controls, seeds, settings, hi_controls)
            for (i, path), seed, image in zip(chunk, seeds, images):
                write_png(path, image, _parameters(prompt, loaded, character, seed, controls[0].size,
                                                   loaded.runner.last_padded, ti))
                manifest.record(f"{RAW}/{path.name}", inputs=files + maps,
                                params={"prompt": prompt, "seed": seed, **settings_common, **retry})
                manifest.save()  # per image: a killed run keeps the record of every finished one
                result.written.append(path)
                bar.update(1)
    finally:
        manifest.save()
        bar.close()
        result.contact = _write_contact(work, title, subtitle, code_list, shown, set_dir)
        result.seconds = time.perf_counter() - start
    return result


def _retry_numbers(manifest: Manifest, n: int) -> dict[str, list[int]]:
    """{code: candidate numbers ≥ n} recorded in the set's manifest: the candidates pick retries may have made
    (the caller keeps those whose record says so)."""
    out: dict[str, list[int]] = {}
    for name in manifest.names():
        stem = name[len(RAW) + 1:-4] if name.startswith(f"{RAW}/") and name.endswith(".png") else ""
        code, _, number = stem.partition("-")
        if number.isdigit() and int(number) >= n:
            out.setdefault(code, []).append(int(number))
    return {code: sorted(ix) for code, ix in out.items()}


def _batches(todo: list[tuple[ImageCode, int, Path]], batch: int | None, runner: Runner, device: str,
             g: Any, kind: str) -> list[tuple[ImageCode, list[tuple[int, Path]]]]:
    """The candidates to make, per code (in order), in batches of `batch` (None: from the GPU's memory, 1 on the
    CPU; 1 for a sampler whose noise is not per image). A batch shares its code's prompt and control maps."""
    if batch is None:  # body templates are twice as tall as wide
        batch = batch_size(device, g.size, g.size * (2 if kind == "b" else 1), g.hires_scale, g.candidates)
    if not runner.batches:
        batch = 1
    out: list[tuple[ImageCode, list[tuple[int, Path]]]] = []
    for code, i, path in todo:
        if out and out[-1][0] == code and len(out[-1][1]) < batch:
            out[-1][1].append((i, path))
        else:
            out.append((code, [(i, path)]))
    return out


def _parameters(prompt: str, loaded: _Loaded, character: Character, seed: int, size: tuple[int, int],
                padded: bool = False, ti: str = "") -> str:
    g = character.generation
    fields = dict(loaded.fields)
    head = ("Steps", "Sampler", "Schedule type", "CFG scale")
    fields = {**{k: fields[k] for k in head}, "Seed": seed, "Size": f"{size[0]}x{size[1]}",
              **{k: v for k, v in fields.items() if k not in head}}
    if g.hires_scale > 1:
        fields |= {"Denoising strength": g.hires_denoise, "Hires upscale": g.hires_scale,
                   "Hires steps": g.hires_steps or "", "Hires upscaler": "Lanczos"}
    if ti:
        fields["TI hashes"] = ti
    if padded:
        fields["Pad conds"] = True
    fields["Version"] = f"charframe {__version__}"
    text = f"{prompt}, {loaded.lora_tag}" if loaded.lora_tag else prompt
    return parameters_text(text, character.negative, fields)
