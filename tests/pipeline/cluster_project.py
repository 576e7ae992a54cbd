"""The executor tests' project (charframe.testing.tiny_project): three tiny characters and a group — aa and bb
with one outfit each form the group `duo`, cc has no outfit (its face stage only) — and the content of its
output files, to compare runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from charframe.testing.tiny_project import make_tiny_project
from charframe.util.manifest import digest_file

CHARACTERS = {"aa": "sailor uniform", "bb": "kimono", "cc": ""}


def make_cluster_project(root: Path) -> Path:
    return make_tiny_project(root, CHARACTERS, {"duo": ("aa", "bb")})


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
