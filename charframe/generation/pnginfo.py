"""WebUI's `parameters` PNG text chunk, so PNG Info in WebUI (and civitai, ComfyUI loaders) reads our images.

Format (one line each): the prompt, `Negative prompt: …`, then `Key: value, Key: value, …` with the values
WebUI writes (`Steps`, `Sampler`, `Schedule type`, `CFG scale`, `Seed`, `Size`, `Model hash`, `Model`,
`Clip skip`, `RNG`, `ControlNet 0: "Module: …, Model: name [hash], Weight: …, …"` as sd-webui-controlnet
serializes a unit, `Hires upscale`, `Hires steps`, `Lora hashes`, …). A value with a comma, colon or newline is
quoted as WebUI quotes it (a JSON string).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR, atomic_write_bytes

KEY = "parameters"
MODULES_FILE = DATA_DIR / "controlnet_modules.toml"


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    text = str(v)
    if any(c in text for c in ",:\n") and not (text.startswith('"') and text.endswith('"')):
        return json.dumps(text, ensure_ascii=False)
    return text


def parameters_text(prompt: str, negative: str, fields: Mapping[str, object]) -> str:
    """The three-part text WebUI writes; `fields` in order, empty values left out."""
    line = ", ".join(f"{k}: {_value(v)}" for k, v in fields.items() if v not in ("", None))
    return f"{prompt}\nNegative prompt: {negative}\n{line}"


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, str]:
    return dict(tomlio.load(MODULES_FILE)["module"])


def webui_module(control_map: str) -> str:
    """The sd-webui-controlnet preprocessor name for a charframe control map (data/controlnet_modules.toml)."""
    return _modules().get(control_map, "none")


def controlnet_field(module: str, model: str, weight: float, start: float, end: float, processor_res: int = -1) -> str:
    """The value of a `ControlNet N` field as sd-webui-controlnet serializes a unit (every infotext field of
    ControlNetUnit, `str()` of each value), for `parameters_text` to quote. `module` is a WebUI preprocessor
    name (see `webui_module`)."""
    fields = {"Module": module, "Model": model, "Weight": float(weight), "Resize Mode": "Crop and Resize",
              "Processor Res": processor_res, "Threshold A": -1, "Threshold B": -1, "Guidance Start": float(start),
              "Guidance End": float(end), "Pixel Perfect": False, "Control Mode": "Balanced"}
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def _split_fields(line: str) -> dict[str, str]:
    """`Key: value, Key: "quoted, value", …` → {key: value}, quoted values unquoted as JSON strings."""
    fields: dict[str, str] = {}
    buf, quoted, escaped = "", False, False
    for c in line + ",":
        if quoted:
            buf += c
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
            buf += c
        elif c == ",":
            key, sep, value = buf.partition(":")
            if sep and key.strip():
                value = value.strip()
                if len(value) > 1 and value[0] == value[-1] == '"':
                    try:
                        value = json.loads(value)
                    except ValueError:
                        pass
                fields[key.strip()] = value
            buf = ""
        else:
            buf += c
    return fields


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative, fields) back from a parameters text, read the way WebUI's PNG Info reads it: the last
    line holds the fields when it has at least three, lines are stripped, `Negative prompt:` starts the negative."""
    *lines, last = text.strip().split("\n")
    fields = _split_fields(last)
    if len(fields) < 3:
        lines.append(last)
        fields = {}
    prompt: list[str] = []
    negative: list[str] = []
    for line in (ln.strip() for ln in lines):
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    return "\n".join(prompt), "\n".join(negative), fields


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
