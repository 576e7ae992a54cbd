"""The executor tests' project: three tiny characters and a group, the smallest the real steps accept.

aa and bb have one outfit each and form the group `duo`; cc has no outfit (its face stage only). 64 px
generation in one sampling step, one candidate per code, one training step, one code per set kept in the datasets,
a 32 px preview in one step: every step runs for real on the tiny models, in seconds. `[cluster] cpus = 1`: every
Ray task and Slurm job computes with one thread, as the local run does under `one_thread`, so the files match bit
for bit.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from charframe.util.manifest import digest_file

REPO = Path(__file__).resolve().parents[2]
RECIPE = 'logic = "Lora1x1A1-AdamW8"\ndim = 2\nlr = 100\nsteps = 1\n'
KEEP = ("f00", "b00")
EXCLUDE = [f"{k}{e}{a}" for k in "fb" for e in range(3) for a in range(5) if f"{k}{e}{a}" not in KEEP]
GENERATION = 'size = 64\nsteps = 1\nhires_scale = 1.0\nsampler = "Euler a"\ncandidates = 1\n'
CHARACTERS = {"aa": "sailor uniform", "bb": "kimono", "cc": ""}


def character_toml(kw: str, outfit_prompt: str) -> str:
    stages = "".join(f"[training.{s}]\n{RECIPE}" for s in ("face", "body", "group"))
    outfits = f'[outfits]\nx = "{outfit_prompt}"\n' if outfit_prompt else ""
    exclude = "[" + ", ".join(f'"{c}"' for c in EXCLUDE) + "]"
    return (f'keyword = "{kw}"\nclass = "girl"\nprompt = "1girl, {kw}"\nfill = "black"\n{outfits}'
            f'[generation]\n{GENERATION}[export]\nsizes = [64, 128]\nexclude = {exclude}\n{stages}')


def make_cluster_project(root: Path) -> Path:
    (root / "Characters").mkdir(parents=True)
    (root / "LoRAInput").mkdir()
    for folder in ("FaceTemplate", "BodyTemplate"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "charframe.toml").write_text('[preview]\nscenes = ["in a forest"]\nseeds = [1]\ntiny_size = 32\n'
                                         'tiny_steps = 1\n[cluster]\ncpus = 1\n')
    for kw, outfit in CHARACTERS.items():
        (root / "Characters" / f"{kw}.toml").write_text(character_toml(kw, outfit))
    (root / "Characters" / "duo.group.toml").write_text(
        '[[member]]\ncharacter = "aa"\noutfit = "x"\n[[member]]\ncharacter = "bb"\noutfit = "x"\n')
    return root


#: what a run leaves that is not an output: step records and logs (times), TensorBoard events, submitit's folder
NOT_OUTPUTS = re.compile(r"(^|/)(pipeline|cluster|replaced|history)/|^LoRALog/|\.charframe-[^/]*\.json$")


def output_hashes(root: Path) -> dict[str, str]:
    """Every output file of the project by its path, with its content digest (`util.manifest.digest_file`: a
    LoRA by its tensors); text files with the project's location taken out (the dataset TOML holds it)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel.startswith(("Characters/", "FaceTemplate/", "BodyTemplate/")) or NOT_OUTPUTS.search(rel):
            continue
        if p.suffix in (".toml", ".txt", ".json"):
            text = p.read_text(encoding="utf-8").replace(str(root), "<project>")
            out[rel] = hashlib.blake2b(text.encode()).hexdigest()[:16]
        else:
            out[rel] = digest_file(p)
    return out
