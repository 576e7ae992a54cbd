"""Where jobs find their inputs: dataset folders and the old batch file's positional names."""

from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.training.paths import job_dirs, resolve_bat, resolve_dataset


def _project(tmp_path: Path) -> Path:
    ds = tmp_path / "LoRAInput" / "4_krnk"
    ds.mkdir(parents=True)
    (ds / "4_krnk.toml").write_text("[general]\n")
    (tmp_path / "LoRAInput" / "Defmix-v2.0.safetensors").write_bytes(b"m")
    (tmp_path / "LoRAInput" / "kl-f8-anime2.ckpt").write_bytes(b"v")
    old = tmp_path / "LoRAOutput" / "krnk"
    old.mkdir(parents=True)
    (old / "krnk-LohaA50p-AdamW8-32-100-1000.safetensors").write_bytes(b"l")
    return tmp_path


def test_resolve_dataset(tmp_path: Path) -> None:
    root = _project(tmp_path)
    toml = root / "LoRAInput" / "4_krnk" / "4_krnk.toml"
    assert resolve_dataset(root / "LoRAInput" / "4_krnk") == toml
    assert resolve_dataset(toml) == toml
    with pytest.raises(CharframeError, match="charframe prepare"):
        resolve_dataset(root / "LoRAInput")
    with pytest.raises(CharframeError, match="no such dataset"):
        resolve_dataset(root / "nothing")


def test_train_bat_names_resolve_like_the_batch_file(tmp_path: Path) -> None:
    root = _project(tmp_path)
    dirs = job_dirs(root / "LoRAInput" / "4_krnk")
    assert dirs.root == root
    job = resolve_bat("4_krnk", "krnksf", "Defmix-v2.0.safetensors", "kl-f8-anime2.ckpt",
                      "krnk-LohaA50p-AdamW8-32-100-1000", dirs)
    assert job.dataset == root / "LoRAInput" / "4_krnk" / "4_krnk.toml"
    assert job.model == root / "LoRAInput" / "Defmix-v2.0.safetensors"
    assert job.vae == root / "LoRAInput" / "kl-f8-anime2.ckpt"
    assert job.continue_from == root / "LoRAOutput" / "krnk" / "krnk-LohaA50p-AdamW8-32-100-1000.safetensors"
    assert (job.output_dir, job.logging_dir, job.out) == (root / "LoRAOutput", root / "LoRALog", "krnksf")
    assert resolve_bat("4_krnk", "k", "Defmix-v2.0.safetensors", "-", None, dirs).vae is None
    with pytest.raises(CharframeError, match="model 'missing.safetensors' not found"):
        resolve_bat("4_krnk", "k", "missing.safetensors", "-", None, dirs)
