"""The third-party libraries charframe stands on: their versions (for bug reports) and their noise.

Kept in one place so that a dependency's quirk is answered once, narrowly, and documented here:

- bitsandbytes ≥ 0.48 logs "Failed to load CPU gemm_4bit_forward from kernels-community … pip install kernels"
  when it is imported on a CPU with AVX512-BF16 and no hub access. diffusers imports it whenever a model is
  loaded; charframe never uses 4-bit CPU kernels, so that one record is dropped (nothing else from the logger).
- diffusers' "should be kept in float32 … Casting directly with `to()`" note is avoided at its cause:
  `place` casts a model only when its dtype really changes (diffusers warns on any dtype argument).

- onnxruntime (≥ 1.2x, used by rembg in `clean`) writes a device id and a telemetry database into
  `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` when it is imported: files outside the project that the
  user never asked for. Its own switch `ORT_DISABLE_TELEMETRY=1`, read when it is imported, turns that off;
  `no_dependency_telemetry` sets it (a value the user set is kept).

`quiet_dependency_notes` is called by the CLI's entry point and before any model is loaded (`models.load`);
`no_dependency_telemetry` by it and by every module that imports onnxruntime (`cleaning.rembg_method`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
from typing import Any
from charframe import __version__

#: distribution names reported by `charframe env`, in the order a bug report reads them.
REPORTED = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "safetensors", "lycoris-lora",
            "bitsandbytes", "peft", "opencv-python-headless", "opencv-python", "numpy", "pillow",
            "onnxruntime", "rembg", "controlnet-aux", "watchdog", "tensorboard", "ray", "submitit")

_BNB_CPU_KERNEL_NOTE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropRecord(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


#: environment switches that stop a dependency from writing telemetry or device ids (see the module docstring)
NO_TELEMETRY = {"ORT_DISABLE_TELEMETRY": "1"}


def no_dependency_telemetry() -> None:
    """Turn off the dependencies' telemetry files before they are imported; a value the user set is kept."""
    for name, value in NO_TELEMETRY.items():
        os.environ.setdefault(name, value)


def quiet_dependency_notes() -> None:
    """Drop the dependency notes users read as errors (see the module docstring). Idempotent, imports nothing."""
    no_dependency_telemetry()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropRecord) for f in logger.filters):
        logger.addFilter(_DropRecord(_BNB_CPU_KERNEL_NOTE))


def place(module: Any, device: Any = None, dtype: Any = None) -> Any:
    """`module.to(device, dtype)` that passes the dtype only when it changes (diffusers warns on every dtype cast)."""
    if dtype is not None:
        current = next((p.dtype for p in module.parameters() if p.is_floating_point()), dtype)
        if current != dtype:
            module.to(dtype=dtype)
    if device is not None:
        module.to(device=device)
    return module


def versions() -> dict[str, str]:
    """Installed version of each reported distribution ("-" when absent); no library is imported."""
    out = {}
    for name in REPORTED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def cv2_build() -> str:
    """The OpenCV version the `cv2` module reports (it can differ from the wheel that pip lists)."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a required dependency
        return f"not importable ({e})"
    return str(cv2.__version__)


def accelerator() -> str:
    """The CUDA device torch sees, its memory and the CUDA build, or why there is none."""
    import torch

    if not torch.cuda.is_available():
        return f"none (torch {torch.__version__} CUDA build: {torch.version.cuda or 'cpu-only'})"
    props = torch.cuda.get_device_properties(0)
    return (f"{torch.cuda.device_count()}× {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"capability {props.major}.{props.minor}, CUDA {torch.version.cuda}")


def report() -> list[tuple[str, str]]:
    """Rows for `charframe env`: charframe, Python, platform, each dependency, OpenCV's own build, the device."""

    rows = [("charframe", __version__), ("python", platform.python_version()),
            ("platform", f"{platform.system()} {platform.machine()}")]
    rows += [(name, v) for name, v in versions().items() if v != "-" or name != "opencv-python"]
    rows += [("cv2 (import)", cv2_build()), ("cuda device", accelerator())]
    return rows
