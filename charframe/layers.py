"""The package's layers, bottom to top: a module imports only its own package or a package of a LOWER layer.

This is the architecture in one table (tests/test_imports.py enforces it, for `import` statements and for the
`"charframe.x.y:function"` strings the pipeline's step table resolves at run time). Packages in one layer are
independent of each other. Reading upward follows the method: what a model family is (`families`: pure data and
functions, so every layer may ask it) → names → captions/TOML (dataset) → the character →
models → LoRA keys and file tools → templates → generation → cleaning (clean, pick, export) → training →
pipeline (stages, steps, rerun, watch) → the CLI. Test helpers (`testing`) may use anything below the pipeline.

Where a lower layer needs something a higher one has, the thing moves down (the kohya layer list lives in
`lora.targets`, the CLIP clip-skip states in `models.clip`): it never imports upward.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "deps", "layers"),
    ("util",),
    ("families",),
    ("project", "prompt_syntax"),
    ("dataset",),
    ("character",),
    ("models",),
    ("lora",),
    ("templates",),
    ("generation",),
    ("cleaning",),
    ("training",),
    ("pipeline",),
    ("testing",),
    ("cli",),
    ("__main__",),
)


def layer_of(module: str) -> int:
    """The layer index of a dotted charframe module name (`charframe.lora.io` → 7)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise KeyError(f"{module}: its package is in no layer of charframe.layers.LAYERS; add it there")
