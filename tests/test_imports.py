"""The package's import graph: layered (a module imports only its own package or a lower layer, as
`charframe.layers.LAYERS` declares), one-way (no cycle between charframe modules) and explicit (no charframe
module imported inside a function, except by the CLI, which imports the library lazily so that `charframe --help`
and the naming commands start without loading torch)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from charframe.layers import LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "charframe"
LAZY_ALLOWED = ("charframe.cli",)  # see the module docstring


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _targets(node: ast.AST, current: str) -> list[str]:
    """charframe modules an import statement loads (`from pkg import mod` counts as pkg.mod when mod is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "charframe"]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charframe" and node.level == 0:
        out = []
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            out.append(sub if sub in MODULES else node.module)
        return out
    return []


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), []
    for node in ast.walk(tree):
        names = _targets(node, _module_name(path))
        if not names:
            continue
        if node in tree.body or any(node in getattr(n, "body", []) for n in tree.body if isinstance(n, (ast.If, ast.Try))):
            top.update(names)
        else:
            nested += [(node.lineno, n) for n in names]
    return top, nested


#: `"charframe.training.outputs:find_state"`: a function the pipeline resolves by name at run time
CALL_STRING = re.compile(r"^(charframe(?:\.\w+)+):\w+$")


def _called_by_name(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every "module:function" string constant naming a charframe module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = CALL_STRING.match(node.value)
            if m:
                out.append((node.lineno, m[1]))
    return out


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """`file:line: a -> b (layer i -> j)` for each import (or resolved-by-name call) that does not go down."""
    bad = []
    for name, path in sorted(modules.items()):
        if name == "charframe":
            continue
        top, nested = _imports(path)
        lines = {mod: 0 for mod in top} | {mod: line for line, mod in nested}
        lines |= {mod: line for line, mod in _called_by_name(path)}
        for dep, line in sorted(lines.items()):
            if dep == "charframe" or _package(dep) == _package(name):
                continue
            here, there = layer_of(name), layer_of(dep)
            if there >= here:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} -> {dep} (layer {here} -> {there})")
    return bad


def test_every_package_has_a_layer() -> None:
    declared = {p for names in LAYERS for p in names}
    present = {_package(m) for m in MODULES if m != "charframe"}
    assert present <= declared, f"add to charframe/layers.py: {sorted(present - declared)}"


def test_imports_go_down_the_layers() -> None:
    """Direction, not only cycles: a lower layer never imports a higher one (nor resolves one by name)."""
    bad = upward_imports(MODULES)
    assert not bad, "upward imports (move the shared piece down instead):\n" + "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "charframe"
    (pkg / "lora").mkdir(parents=True)
    (pkg / "training").mkdir()
    (pkg / "lora" / "x.py").write_text("from charframe.training.loop import train_steps\n")
    (pkg / "training" / "loop.py").write_text('CALL = "charframe.pipeline.steps:run"\n')
    mods = {"charframe.lora.x": pkg / "lora" / "x.py", "charframe.training.loop": pkg / "training" / "loop.py"}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = upward_imports(mods)
    finally:
        ROOT = saved
    assert [f.split(": ", 1)[1] for f in found] == [
        "charframe.lora.x -> charframe.training.loop (layer 7 -> 11)",
        "charframe.training.loop -> charframe.pipeline.steps (layer 11 -> 12)",
    ]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        top, nested = _imports(path)
        deps = top | {n for _, n in nested}
        # importing a.b.c also runs a/__init__ and a/b/__init__
        graph[name] = {d for dep in deps for d in _with_parents(dep) if d in MODULES and d != name}
    return graph


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def test_no_import_cycle_between_charframe_modules() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_function_level_import_of_charframe_modules_below_the_cli() -> None:
    offenders = []
    for name, path in sorted(MODULES.items()):
        if name.startswith(LAZY_ALLOWED):
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: {mod}" for line, mod in _imports(path)[1]]
    assert not offenders, "import these at module level:\n" + "\n".join(offenders)


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path: Path) -> None:
    src = "import os\nfrom charframe.util import toml\n\ndef f():\n    from charframe.errors import CharframeError\n"
    path = tmp_path / "m.py"
    path.write_text(src)
    top, nested = ast.parse(src), None
    tree = ast.parse(src)
    assert [_targets(n, "x") for n in tree.body[:2]] == [[], ["charframe.util.toml"]]
    inner = tree.body[2].body[0]
    assert _targets(inner, "x") == ["charframe.errors"] and inner not in tree.body


#: distribution → the module charframe imports from it (where the names differ)
IMPORT_NAME = {"pillow": "PIL", "lycoris-lora": "lycoris", "tomli-w": "tomli_w", "opencv-python-headless": "cv2",
               "controlnet-aux": "controlnet_aux"}
#: required dependencies charframe needs without importing them itself, and why
INDIRECT = {
    "torchvision": "controlnet-aux's HED detector imports it",
    "tensorboard": "torch.utils.tensorboard writes the logs through it",
}


def _declared() -> tuple[list[str], list[str]]:
    import re

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = lambda spec: re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].strip().lower()  # noqa: E731
    return [name(s) for s in project["dependencies"]], [name(s) for s in project["optional-dependencies"]["test"]]


def _imported_top_levels(skip: str = "") -> set[str]:
    found: set[str] = set()
    for name, path in MODULES.items():
        if skip and (name == skip or name.startswith(skip + ".")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_dependencies_are_declared_where_they_are_used() -> None:
    """Every required dependency is imported by charframe (or listed in INDIRECT with the reason); test-only ones
    (peft: the diffusers-loader compatibility tests; onnx: building the tiny CCIP models in charframe.testing, the
    builders of tests and benchmarks) are not required, and the library proper never imports them."""
    required, test_only = _declared()
    imported = _imported_top_levels()
    unused = [d for d in required if d not in INDIRECT and IMPORT_NAME.get(d, d.replace("-", "_")) not in imported]
    assert unused == []
    assert "peft" in test_only and "peft" not in required and "peft" not in imported
    assert "onnx" in test_only and "onnx" not in _imported_top_levels(skip="charframe.testing")
