"""The reproducible install: the venv holds exactly constraints.txt, no install path resolves lower bounds,
and the dependency notes users read as errors are gone (charframe.deps)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from charframe import deps

ROOT = Path(__file__).resolve().parents[1]
TORCH_FAMILY = re.compile(r"^(torch|torchvision|triton|nvidia-[a-z0-9-]+)$")


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.strip().lower()] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installed_versions_equal_the_lock_file() -> None:
    installed = {_norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    locked = {_norm(k): v for k, v in _locked().items()}
    own_torch = bool(os.environ.get("TORCH_SPEC"))  # bin/install.sh leaves the torch family unpinned then
    wrong = {name: (version, installed.get(name)) for name, version in locked.items()
             if not (own_torch and TORCH_FAMILY.match(name)) and name in installed and installed[name] != version}
    assert not wrong, f"installed versions differ from constraints.txt (locked, installed): {wrong}"
    # every dependency charframe declares is pinned, transitively included (spot-check the direct ones)
    for name in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "lycoris-lora",
                 "opencv-python-headless", "numpy", "pillow", "pip", "setuptools"):
        assert name in locked, f"constraints.txt lacks a pin for {name}"
        assert name in installed, f"{name} is locked but not installed"


def test_opencv_is_the_build_whose_pixels_match_sd_scripts() -> None:
    assert _locked()["opencv-python-headless"] == "4.10.0.84"  # sd-scripts' own pin (see bin/lock-holds.txt)
    assert deps.cv2_build() == "4.10.0"


def test_no_install_path_resolves_lower_bounds_only() -> None:
    install = (ROOT / "bin" / "install.sh").read_text(encoding="utf-8")
    pip_lines = [ln for ln in install.splitlines() if re.search(r"pip install", ln) and not ln.lstrip().startswith("#")]
    assert len(pip_lines) == 4
    assert all('-c "$lock"' in ln for ln in pip_lines), pip_lines
    assert "--upgrade" not in install
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash bin/install.sh" in ci and "pip install" not in ci


def test_bitsandbytes_cpu_kernel_note_is_dropped_and_nothing_else() -> None:
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    deps.quiet_dependency_notes()
    deps.quiet_dependency_notes()  # idempotent: one filter
    assert sum(isinstance(f, deps._DropRecord) for f in logger.filters) == 1

    def passes(msg: str) -> bool:
        return logger.filter(logging.LogRecord(logger.name, logging.WARNING, __file__, 1, msg, (), None)) is not False

    assert not passes("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                      "already `pip install kernels` and the kernels >= 0.11.1")
    assert passes("some other bitsandbytes warning")


def test_place_casts_only_when_the_dtype_changes(caplog: pytest.LogCaptureFixture) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4, sample_size=8)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        deps.place(vae, "cpu", torch.float32)
    assert not [r for r in caplog.records if "kept in float32" in r.getMessage()]
    deps.place(vae, "cpu", torch.bfloat16)
    assert next(vae.parameters()).dtype == torch.bfloat16


def test_env_command_names_every_library_a_bug_report_needs() -> None:
    out = subprocess.run([sys.executable, "-m", "charframe", "env"], capture_output=True, text=True, check=True)
    rows = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in out.stdout.splitlines())
    for name in ("charframe", "python", "torch", "diffusers", "transformers", "accelerate", "lycoris-lora",
                 "bitsandbytes", "opencv-python-headless", "cv2 (import)", "cuda device"):
        assert name in rows, f"charframe env lacks {name}: {out.stdout}"
    assert rows["torch"] == importlib.metadata.version("torch")
    assert rows["cuda device"].startswith("none") or "GiB" in rows["cuda device"]
    assert out.stderr == ""
