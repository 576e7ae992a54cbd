"""Tiny ONNX models with CCIP's signature, for the identity tests and the scoring benchmark (no download).

CCIP (`deepghs/ccip_onnx/<model>/`) is a feature model — input `input` (N, 3, 384, 384) float32, CLIP-normalised
RGB; output `output` (N, 768) — a metric model — input `input` (N, 768); output `output` (N, N), the pairwise
"difference" — and `metrics.json` with the `threshold`. Two feature models are built here with `onnx.helper`
(milliseconds, no torch):

- `random`: an 8×8 average pool of each channel times a fixed random matrix (a stand-in with no meaning);
- `histogram`: the colour histogram of the figure (per channel, 256 soft bins over the un-normalised 0-1 values of
  a 48×48 average-pooled copy, the 10 darkest and lightest bins — the black or white fill — left out, normalised to
  sum 1): two pictures of the same character in any pose are close, a figure with another hair colour is far. Its metric model is the total-variation distance of the histograms (half their L1 distance,
  averaged over the channels), so differences lie in [0, 1].

`write_hf_cache` lays the files out as the Hugging Face cache does (`models--deepghs--ccip_onnx/refs/main` →
`snapshots/<commit>/<model>/…`), so `imgutils.metrics.ccip` finds them offline exactly where it would find the
real model, and `write_folder` puts them in a plain folder (charframe's other way to name a model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE, DIM, BINS = 384, 768, 256
#: bins at either end left out of the histogram: the black or white background fill
EDGE_BINS = 10
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="charframe-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _io(out_shape: list) -> tuple:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    return x, y


def _const(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, np.float32) if value.dtype.kind == "f" else value, name)


def build_random_feature(path: Path, seed: int = 0) -> Path:
    """The `random` feature model (see the module doc)."""
    from onnx import helper

    x, y = _io(["N", DIM])
    w = np.random.default_rng(seed).normal(0, 1, (3 * 8 * 8, DIM)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[48, 48], strides=[48, 48]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["output"])]
    return _save(helper.make_graph(nodes, "ccip_random_feat", [x], [y], [_const("w", w)]), path)


def build_histogram_feature(path: Path, sigma: float = 3.0 / BINS) -> Path:
    """The `histogram` feature model (see the module doc)."""
    from onnx import helper

    x, y = _io(["N", DIM])
    centres = ((np.arange(BINS, dtype=np.float32) + 0.5) / BINS).reshape(1, 1, BINS, 1)
    inits = [_const("std", np.array(CLIP_STD, np.float32).reshape(1, 3, 1, 1)),
             _const("mean", np.array(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1)),
             _const("centres", centres), _const("k", np.array(-0.5 / sigma ** 2, np.float32)),
             _const("shape1", np.array([0, 3, 1, -1], np.int64)), _const("shape2", np.array([0, DIM], np.int64)),
             _const("axes", np.array([3], np.int64))]
    nodes = [helper.make_node("Mul", ["input", "std"], ["s"]),
             helper.make_node("Add", ["s", "mean"], ["rgb"]),                       # back to 0-1
             helper.make_node("AveragePool", ["rgb"], ["small"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Reshape", ["small", "shape1"], ["pixels"]),          # (N, 3, 1, P)
             helper.make_node("Sub", ["pixels", "centres"], ["d"]),                 # (N, 3, BINS, P)
             helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("Mul", ["d2", "k"], ["e"]),
             helper.make_node("Exp", ["e"], ["w"]),
             helper.make_node("ReduceSum", ["w", "axes"], ["all_counts"], keepdims=0),  # (N, 3, BINS)
             helper.make_node("Mul", ["all_counts", "figure_bins"], ["counts"]),
             helper.make_node("ReduceSum", ["counts", "axes2"], ["total"], keepdims=1),
             helper.make_node("Div", ["counts", "total"], ["hist"]),
             helper.make_node("Reshape", ["hist", "shape2"], ["output"])]
    figure = np.ones((1, 1, BINS), np.float32)
    figure[..., :EDGE_BINS] = figure[..., BINS - EDGE_BINS:] = 0  # the black or white fill is no colour of the figure
    inits += [_const("axes2", np.array([2], np.int64)), _const("figure_bins", figure)]
    return _save(helper.make_graph(nodes, "ccip_histogram_feat", [x], [y], inits), path)


def build_tv_metric(path: Path) -> Path:
    """The metric model: total-variation distance of per-channel histograms, (N, 768) → (N, N)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", DIM])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "N"])
    inits = [_const("ax0", np.array([0], np.int64)), _const("ax1", np.array([1], np.int64)),
             _const("axes", np.array([2], np.int64)), _const("scale", np.array(0.5 / 3, np.float32))]
    nodes = [helper.make_node("Unsqueeze", ["input", "ax1"], ["a"]),   # (N, 1, D)
             helper.make_node("Unsqueeze", ["input", "ax0"], ["b"]),   # (1, N, D)
             helper.make_node("Sub", ["a", "b"], ["d"]),
             helper.make_node("Abs", ["d"], ["ad"]),
             helper.make_node("ReduceSum", ["ad", "axes"], ["l1"], keepdims=0),
             helper.make_node("Mul", ["l1", "scale"], ["output"])]
    return _save(helper.make_graph(nodes, "ccip_tv_metric", [x], [y], inits), path)


def build_cosine_metric(path: Path) -> Path:
    """A metric model for the random features: 1 − cosine similarity, (N, D) → (N, N)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", DIM])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "N"])
    inits = [_const("axes", np.array([1], np.int64)), _const("one", np.array(1.0, np.float32)),
             _const("eps", np.array(1e-12, np.float32))]
    nodes = [helper.make_node("Mul", ["input", "input"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "axes"], ["n2"], keepdims=1),
             helper.make_node("Add", ["n2", "eps"], ["n2e"]),
             helper.make_node("Sqrt", ["n2e"], ["norm"]),
             helper.make_node("Div", ["input", "norm"], ["unit"]),
             helper.make_node("Transpose", ["unit"], ["unit_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["unit", "unit_t"], ["cos"]),
             helper.make_node("Sub", ["one", "cos"], ["output"])]
    return _save(helper.make_graph(nodes, "ccip_cosine_metric", [x], [y], inits), path)


def write_folder(folder: Path, kind: str = "histogram", threshold: float = 0.1) -> Path:
    """`folder/model_feat.onnx`, `model_metrics.onnx`, `metrics.json`: a CCIP model folder of `kind`
    ("histogram" or "random")."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "histogram":
        build_histogram_feature(folder / "model_feat.onnx")
        build_tv_metric(folder / "model_metrics.onnx")
    elif kind == "random":
        build_random_feature(folder / "model_feat.onnx")
        build_cosine_metric(folder / "model_metrics.onnx")
    else:
        raise ValueError(kind)
    (folder / "metrics.json").write_text(json.dumps({"threshold": threshold}), encoding="utf-8")
    return folder


def write_hf_cache(cache: Path, model: str, kind: str = "histogram", threshold: float = 0.1) -> Path:
    """The model's files in a Hugging Face cache folder (`cache` = what HF_HUB_CACHE names), as
    `huggingface-cli download deepghs/ccip_onnx --include "<model>/*"` leaves them; returns the snapshot folder."""
    folder = hf_snapshot(cache, "deepghs/ccip_onnx") / model
    write_folder(folder, kind, threshold)
    return folder


def hf_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hugging Face cache, its `refs/main` pointing at it (what a download
    leaves, and where `huggingface_hub.try_to_load_from_cache` looks)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    return repo / "snapshots" / COMMIT
