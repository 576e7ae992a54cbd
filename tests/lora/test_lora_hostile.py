"""Issue 12 on the LoRA tools, tried as a hostile user: each case exits 2 with one clear line and
leaves every user file as it was (nothing changed, nothing new, no folder created)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from charframe.cli import main as cli_main
from charframe.lora import io as lio
from charframe.lora.ops.inspect import inspect_file
from charframe.testing.synthetic_lora import random_network

T = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (8, 8),
    "lora_unet_down_blocks_0_attentions_0_proj_in": (8, 8, 1, 1),
    "lora_unet_down_blocks_0_resnets_0_conv1": (8, 8, 3, 3),
    "lora_unet_mid_block_resnets_0_conv2": (8, 8, 3, 3),
    "lora_unet_up_blocks_3_resnets_2_conv2": (8, 8, 3, 3),
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (8, 8),
}
NAN_26 = ",".join(["nan"] + ["1"] * 25)


def save(folder: Path, name: str = "a", kind: str = "lora", dtype=torch.float32, **kw) -> Path:
    return lio.save_lora_file(folder / f"{name}.safetensors", random_network(T, 4, kind, dtype=dtype, **kw), {})


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under `folders` (hidden ones too) with a hash of its bytes."""
    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for d in dirs:
                out[os.path.join(root, d)] = "dir"
            for f in files:
                out[os.path.join(root, f)] = hashlib.sha256(Path(root, f).read_bytes()).hexdigest()
    return out


def refused(argv: list[str], capsys, *expected: str, watch: tuple[Path, ...]) -> str:
    """Run the CLI quietly: exit 2, one line on stderr holding every `expected` text, files untouched."""
    before = snapshot(*watch)
    capsys.readouterr()
    assert cli_main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    for text in expected:
        assert text in err, err
    assert snapshot(*watch) == before
    return err


# ---- point 3: every number is finite and in range -------------------------------------------

@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e300"])
def test_merge_refuses_non_finite_or_huge_weights(tmp_path, capsys, bad):
    src = save(tmp_path)
    weights = ",".join([bad] + ["1"] * 25)
    refused(["merge", str(src), f"--preset={weights}"], capsys, "--preset", "BASE", "finite number", watch=(tmp_path,))


def test_preset_file_with_nan_is_refused(tmp_path, capsys):
    src = save(tmp_path)
    presets = tmp_path / "p.toml"
    presets.write_text("[block_presets]\nODD = [nan, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n", encoding="utf-8")
    refused(["merge", str(src), "--preset", "ODD", "--presets", str(presets)], capsys, "p.toml", "preset ODD", "nan",
            watch=(tmp_path,))  # fmt: skip


@pytest.mark.parametrize("bad", ["nan", "inf", "1e300", "-1e9"])
def test_mix_refuses_non_finite_or_huge_weights(tmp_path, capsys, bad):
    a, b = save(tmp_path, "a"), save(tmp_path, "b", seed=1)
    refused(["mix", f"{a}:{bad}", str(b)], capsys, "a.safetensors", "finite number", watch=(tmp_path,))


@pytest.mark.parametrize("argv, expected", [
    (["compress", "--sv-ratio", "nan"], "--sv-ratio must be a number ≥ 1, not nan"),
    (["compress", "--sv-ratio", "inf"], "--sv-ratio must be a number ≥ 1, not inf"),
    (["compress", "--sv-ratio", "0.5"], "--sv-ratio must be a number ≥ 1"),
    (["compress", "--sv-fro", "nan"], "--sv-fro must be a fraction in (0, 1]"),
    (["compress", "--sv-cumulative", "0"], "--sv-cumulative must be a fraction in (0, 1]"),
    (["compress", "--rank", "0"], "--rank must be a positive whole number"),
    (["compress", "--max-rank", "0"], "--max-rank must be at least 1"),
    (["mix", "--sv-ratio=-inf"], "--sv-ratio must be a number ≥ 1"),
    (["mix", "--rank", "-3"], "--rank must be a positive whole number"),
])  # fmt: skip
def test_rank_options_are_checked(tmp_path, capsys, argv, expected):
    src = save(tmp_path)
    refused([*argv, str(src)], capsys, expected, watch=(tmp_path,))


def test_result_that_overflows_fp16_is_not_written(tmp_path, capsys):
    tensors = random_network(T, 4, "lora", dtype=torch.float16)
    for k in tensors:
        if k.endswith("lora_up.weight"):
            tensors[k] = torch.full_like(tensors[k], 1000.0)
    src = lio.save_lora_file(tmp_path / "big.safetensors", tensors, {})
    refused(["merge", str(src), "--preset", ",".join(["100"] * 26)], capsys, "NaN or Inf", "nothing written",
            watch=(tmp_path,))  # fmt: skip


# ---- point 7: nothing written outside the intended folder, no folder created ----------------

@pytest.mark.parametrize("name", ["../evil", "sub/evil", "..", "a\\\\b"])
def test_preset_name_cannot_leave_the_folder(tmp_path, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    src = save(work)
    presets = tmp_path / "p.toml"
    presets.write_text(f'[block_presets]\n"{name}" = "{",".join(["1"] * 26)}"\n', encoding="utf-8")
    refused(["merge", str(src), "--preset", name, "--presets", str(presets)], capsys, "p.toml", "preset name",
            "file name", watch=(tmp_path,))  # fmt: skip


def test_mix_output_folder_must_exist(tmp_path, capsys):
    a, b = save(tmp_path, "a"), save(tmp_path, "b", seed=1)
    out = tmp_path / "nonexistent" / "dir" / "x.safetensors"
    refused(["mix", str(a), str(b), "-o", str(out)], capsys, f"output folder {out.parent} does not exist",
            watch=(tmp_path,))  # fmt: skip
    assert not (tmp_path / "nonexistent").exists()
    refused(["mix", str(a), str(b), "-o", str(tmp_path)], capsys, "is a folder", watch=(tmp_path,))
    refused(["mix", str(a), str(b), "-o", str(a / "x.safetensors")], capsys, "is not a folder", watch=(tmp_path,))


# ---- point 9: one reader, so damaged files get the same line from every command --------------

def _damaged(tmp_path: Path, how: str) -> Path:
    good = save(tmp_path, "good").read_bytes()
    n = int.from_bytes(good[:8], "little")
    data = {
        "random": os.urandom(4096),
        "huge-header": (2**62).to_bytes(8, "little") + b"{}" + bytes(100),
        "header-past-end": (len(good) * 2).to_bytes(8, "little") + good[8:],
        "truncated": good[:-100],
        "tiny": b"\x01\x02",
        "empty": b"",
        "non-json": (16).to_bytes(8, "little") + b"\xff\xfe not json at all",
        "lying-shape": good[:8] + good[8 : 8 + n].replace(b'"shape":[4,8]', b'"shape":[9,9]', 1) + good[8 + n :],
        "not-an-object": (4).to_bytes(8, "little") + b"[12]",
    }[how]
    path = tmp_path / f"{how}.safetensors"
    path.write_bytes(data)
    (tmp_path / "good.safetensors").unlink()
    return path


CASES = ["random", "huge-header", "header-past-end", "truncated", "tiny", "empty", "non-json", "lying-shape", "not-an-object"]


@pytest.mark.parametrize("how", CASES)
@pytest.mark.parametrize("command", [["inspect"], ["merge", "--preset", "FACE"], ["compress"], ["mix"]])
def test_every_command_refuses_damaged_files_alike(tmp_path, capsys, command, how):
    bad = _damaged(tmp_path, how)
    refused([command[0], str(bad), *command[1:]], capsys, f"{bad}: not a readable safetensors file", watch=(tmp_path,))


# ---- point 10: messages say what is actually wrong -------------------------------------------

@pytest.mark.parametrize("how", ["random", "truncated-zip", "text", "empty"])
def test_corrupt_ckpt_is_called_corrupt_not_unsafe(tmp_path, capsys, how):
    path = tmp_path / "x.ckpt"
    if how == "truncated-zip":
        torch.save(random_network(T, 4), path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes({"random": os.urandom(3000), "text": b"hello world\n" * 20, "empty": b""}[how])
    err = refused(["inspect", str(path)], capsys, "x.ckpt", "corrupt, truncated or not a PyTorch checkpoint", watch=(tmp_path,))
    assert "trust" not in err


def test_pickle_that_would_run_code_is_still_called_unsafe(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.ckpt")
    refused(["inspect", str(tmp_path / "evil.ckpt")], capsys, "evil.ckpt", "pickled code", watch=(tmp_path,))


@pytest.mark.parametrize("command", [["inspect"], ["merge", "--preset", "FACE"], ["compress"], ["mix"]])
def test_folder_for_file_says_folder(tmp_path, capsys, command):
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    err = refused([command[0], str(folder), *command[1:]], capsys, f"{folder}: is a folder", watch=(tmp_path,))
    assert "no such file" not in err


def test_mix_weight_that_is_not_a_number(tmp_path, capsys):
    a = save(tmp_path)
    err = refused(["mix", f"{a}:abc"], capsys, "the weight 'abc' is not a number", watch=(tmp_path,))
    assert "no such file" not in err
    refused(["mix", str(tmp_path / "missing.safetensors:0.5")], capsys, "missing.safetensors: no such file", watch=(tmp_path,))


# ---- point 11: 3x3 convs of a flat LoHa are counted ------------------------------------------

def test_inspect_counts_3x3_convs_of_flat_loha_like_its_compressed_copy(tmp_path, capsys):
    src = save(tmp_path, "h", "loha")
    assert inspect_file(src).conv3x3 == 3
    assert cli_main(["-q", "compress", str(src)]) == 0
    assert inspect_file(tmp_path / "h-SvR16.safetensors").conv3x3 == 3
    capsys.readouterr()
    assert cli_main(["inspect", str(src)]) == 0
    assert "(6 modules, 3 with 3x3 conv)" in capsys.readouterr().out
    assert inspect_file(save(tmp_path, "t", "loha", tucker=True)).conv3x3 == 3


# ---- point 2: long names: a clear refusal before work, short temporary names -----------------

def test_long_input_name_works_and_temporary_name_stays_short(tmp_path, capsys):
    src = save(tmp_path, "k" * 228)  # 240 characters with ".safetensors"
    assert len(src.name) == 240
    assert cli_main(["-q", "merge", str(src), "--preset", "FACE"]) == 0
    assert cli_main(["-q", "compress", str(src)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([src.name, "k" * 228 + "-FACE.safetensors", "k" * 228 + "-SvR16.safetensors"])


def test_output_name_too_long_is_refused_before_work(tmp_path, capsys):
    src = save(tmp_path, "k" * 240)  # 252 characters: "-FACE" makes the output 257
    refused(["merge", str(src), "--preset", "FACE"], capsys, "longer than the 255", "shorten", watch=(tmp_path,))
    refused(["mix", str(src), str(src)], capsys, "longer than the 255", watch=(tmp_path,))


@pytest.mark.parametrize("command", [["inspect"], ["merge", "--preset", "FACE"], ["compress"], ["mix"]])
def test_missing_input_in_missing_folder_says_no_such_file(tmp_path, capsys, command):
    missing = tmp_path / "nowhere" / "a.safetensors"
    err = refused([command[0], str(missing), *command[1:]], capsys, f"{missing}: no such file", watch=(tmp_path,))
    assert "output" not in err
