"""A tiny ONNX model with the WD14 tagger's signature, for the adherence tests and benchmarks (no download).

The WD14 taggers imgutils runs (`deepghs/wd14_tagger_with_embeddings/<repo>/model.onnx`) take `input` (1, S, S, 3)
float32 — a padded square picture, BGR, 0-255 — and give the tag probabilities (1, T) and an embedding (1, E);
`selected_tags.csv` names the T tags (`tag_id,name,category,count`; category 9 = rating, 0 = general,
4 = character). The model here looks at the picture's mean colour only (a linear layer and a sigmoid, built
with `onnx.helper`), so a test can draw a picture that has a tag: `forest` when green dominates, `snow` when it is
bright, `night` when dark, `red_hair` / `blue_hair` when that channel dominates; `1girl` always (0.9); the ratings
fixed. `write_hf_cache` lays the files out where imgutils finds `SwinV2_v3` offline; `write_folder` in a plain folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from charframe.testing.tiny_ccip import _const, _save, hf_snapshot

SIZE = 32
RATINGS = ("general", "sensitive", "questionable", "explicit")
#: general tag → (weights on the mean B, G, R in 0-1, bias): sigmoid(w · bgr + bias)
GENERAL = {
    "forest": ((-6.0, 12.0, -6.0), -1.0),
    "snow": ((4.0, 4.0, 4.0), -9.0),
    "night": ((-4.0, -4.0, -4.0), 3.0),
    "red_hair": ((-6.0, -6.0, 12.0), -1.0),
    "blue_hair": ((12.0, -6.0, -6.0), -1.0),
    "1girl": ((0.0, 0.0, 0.0), 2.2),
}
CHARACTERS = ("krnk_(charframe)",)
MODEL_REPOS = {"SwinV2_v3": "SmilingWolf/wd-swinv2-tagger-v3"}


def tags() -> list[tuple[str, int]]:
    """(name, category) of every tag, in the model's output order."""
    return [(r, 9) for r in RATINGS] + [(g, 0) for g in GENERAL] + [(c, 4) for c in CHARACTERS]


def build_model(path: Path) -> Path:
    """The tagger ONNX file (see the module doc)."""
    from onnx import TensorProto, helper

    names = tags()
    w = np.zeros((3, len(names)), np.float32)
    b = np.full((len(names),), -3.0, np.float32)
    for j, (name, _) in enumerate(names):
        if name in GENERAL:
            w[:, j], b[j] = GENERAL[name][0], GENERAL[name][1]
    b[0] = 2.0  # rating: general
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIZE, SIZE, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, len(names)])
    e = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3])
    inits = [_const("scale", np.array(1 / 255, np.float32)), _const("w", w), _const("b", b)]
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),   # (1, 3): B, G, R
             helper.make_node("Mul", ["mean", "scale"], ["embedding"]),
             helper.make_node("MatMul", ["embedding", "w"], ["logits0"]),
             helper.make_node("Add", ["logits0", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    return _save(helper.make_graph(nodes, "wd14_tiny", [x], [y, e], inits), path)


def write_labels(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags()):
            w.writerow([1000 + i, name, category, 100 - i])
    return path


def write_folder(folder: Path) -> Path:
    """`folder/model.onnx` and `folder/selected_tags.csv`."""
    build_model(folder / "model.onnx")
    write_labels(folder / "selected_tags.csv")
    return folder


def write_hf_cache(cache: Path, name: str = "SwinV2_v3") -> Path:
    """The tagger `name` in a Hugging Face cache folder, as `huggingface-cli download` leaves the two repos."""
    repo = MODEL_REPOS[name]
    for repo_id, filename, build in (("deepghs/wd14_tagger_with_embeddings", f"{repo}/model.onnx", build_model),
                                     (repo, "selected_tags.csv", write_labels)):
        build(hf_snapshot(cache, repo_id) / filename)
    return cache
