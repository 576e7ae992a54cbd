"""The smallest project the real pipeline steps accept, for the executor tests and benchmarks (issue 23).

Characters with at most one outfit (`x`), 64 px generation in one sampling step, one candidate per code, one
training step, one code per set kept in the datasets (`f00`, `b00`), a 32 px preview in one step: every step runs
for real on the tiny models, in seconds. `[cluster] cpus = 1`: every Ray task and Slurm job computes with one
thread, as a local run under one torch thread does, so the files match bit for bit.
"""

from __future__ import annotations

from pathlib import Path

from charframe.pipeline.demo import ensure_templates

RECIPE = 'logic = "Lora1x1A1-AdamW8"\ndim = 2\nlr = 100\nsteps = 1\n'
KEEP = ("f00", "b00")
EXCLUDE = [f"{k}{e}{a}" for k in "fb" for e in range(3) for a in range(5) if f"{k}{e}{a}" not in KEEP]
GENERATION = 'size = 64\nsteps = 1\nhires_scale = 1.0\nsampler = "Euler a"\ncandidates = 1\n'


def character_toml(kw: str, outfit_prompt: str) -> str:
    """A tiny character; `outfit_prompt` "" = no outfit (its face stage only)."""
    stages = "".join(f"[training.{s}]\n{RECIPE}" for s in ("face", "body", "group"))
    outfits = f'[outfits]\nx = "{outfit_prompt}"\n' if outfit_prompt else ""
    exclude = "[" + ", ".join(f'"{c}"' for c in EXCLUDE) + "]"
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "1girl, {kw}"\nfill = "black"\n{outfits}'
            f'[generation]\n{GENERATION}[export]\nsizes = [64, 128]\nexclude = {exclude}\n{stages}')


def make_tiny_project(root: Path, characters: dict[str, str], groups: dict[str, tuple[str, ...]] | None = None) -> Path:
    """`root` with the checkout's templates, `Characters/<kw>.toml` per `characters` (keyword → outfit prompt) and
    `Characters/<name>.group.toml` per `groups` (name → member keywords, each with its outfit `x`)."""
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    ensure_templates(root)
    (root / "charframe.toml").write_text('[preview]\nscenes = ["in a forest"]\nseeds = [1]\ntiny_size = 32\n'
                                         'tiny_steps = 1\n[cluster]\ncpus = 1\n')
    for kw, outfit in characters.items():
        (root / "Characters" / f"{kw}.toml").write_text(character_toml(kw, outfit))
    for name, members in (groups or {}).items():
        (root / "Characters" / f"{name}.group.toml").write_text(
            "".join(f'[[member]]\ncharacter = "{kw}"\noutfit = "x"\n' for kw in members))
    return root
