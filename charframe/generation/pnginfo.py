"""WebUI's `parameters` PNG text chunk, so PNG Info in WebUI (and civitai, ComfyUI loaders) reads our images.

Format (one line each): the prompt, `Negative prompt: …`, then `Key: value, Key: value, …` with the values
WebUI writes (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`, `Model hash`, `Model`, `Clip skip`,
`ControlNet 0: "Module: …, Model: …, Weight: …, Guidance Start: …, Guidance End: …"`, `Hires upscale`, …).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from charframe.util.files import atomic_write_bytes

KEY = "parameters"


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    text = str(v)
    if any(c in text for c in ",:\n") and not (text.startswith('"') and text.endswith('"')):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def parameters_text(prompt: str, negative: str, fields: Mapping[str, object]) -> str:
    """The three-part text WebUI writes; `fields` in order, empty values left out."""
    line = ", ".join(f"{k}: {_value(v)}" for k, v in fields.items() if v not in ("", None))
    return f"{prompt}\nNegative prompt: {negative}\n{line}"


def controlnet_field(module: str, model: str, weight: float, start: float, end: float) -> str:
    """The quoted value of a `ControlNet N` field, as sd-webui-controlnet writes it."""
    return f'"Module: {module}, Model: {model}, Weight: {weight:g}, Guidance Start: {start:g}, Guidance End: {end:g}"'


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative, fields) back from a parameters text (for tests and for reading seeds back)."""
    lines = text.split("\n")
    fields_line = lines[-1]
    neg_at = next((i for i, ln in enumerate(lines) if ln.startswith("Negative prompt: ")), len(lines) - 1)
    prompt = "\n".join(lines[:neg_at])
    negative = "\n".join(lines[neg_at:-1]).removeprefix("Negative prompt: ")
    fields: dict[str, str] = {}
    key, value, quoted, i = "", "", False, 0
    buf = ""
    while i <= len(fields_line):
        c = fields_line[i] if i < len(fields_line) else ","
        if c == '"' and (i == 0 or fields_line[i - 1] != "\\"):
            quoted = not quoted
            buf += c
        elif c == "," and not quoted:
            if ":" in buf:
                key, value = buf.split(":", 1)
                fields[key.strip()] = value.strip()
            buf = ""
        else:
            buf += c
        i += 1
    return prompt, negative, fields


def write_png(path: Path, image: Image.Image, parameters: str) -> None:
    """Save `image` as PNG with the parameters chunk, atomically (an interrupted run leaves no half file)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())


def read_parameters(path: Path) -> str:
    """The parameters text of a PNG ("" when it has none)."""
    with Image.open(path) as im:
        return im.info.get(KEY, "") or getattr(im, "text", {}).get(KEY, "")
