"""Reading/writing kohya LoRA files: round trip, sd-scripts hashes, weights-only loading, bad input."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save as st_save

from charframe.errors import CharframeError
from charframe.lora import io as lio


def _reference_hashes(tensors, metadata):
    """sd-scripts' definition: serialise with only ss_* metadata, hash data region / 1 MiB window."""
    blob = st_save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    n = int.from_bytes(blob[:8], "little")
    model = hashlib.sha256(blob[8 + n :]).hexdigest()
    legacy = hashlib.sha256(blob[0x100000 : 0x110000]).hexdigest()[:8]
    return model, legacy


def _lora_tensors(big: bool = False):
    g = torch.Generator().manual_seed(0)
    n = 600 if big else 8
    return {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.randn(4, n, 1, 1, generator=g).half(),
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.randn(n, 4, 1, 1, generator=g).half(),
        "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(2.0).half(),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(4, n * 2, generator=g),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(n * 3, 4, generator=g),
    } | ({"lora_te_text_model_encoder_layers_0_mlp_fc2.lora_up.weight": torch.randn(n, n)} if big else {})


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"ss_network_dim": "4", "ss_network_alpha": "2", "ss_output_name": "krnk é\n\"q\"", "note": "x" * 999},
    ],
)
def test_save_round_trip_and_sshs_hashes_match_sd_scripts(tmp_path, big, metadata):
    tensors = _lora_tensors(big)
    out = lio.save_lora_file(tmp_path / "a.safetensors", tensors, metadata)
    loaded, md = lio.load_lora_file(out)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    for k, v in metadata.items():
        assert md[k] == v
    expected = _reference_hashes(tensors, metadata)
    assert out.stat().st_size > (0x110000 if big else 0)
    assert (md[lio.MODEL_HASH_KEY], md[lio.LEGACY_HASH_KEY]) == expected
    assert lio.lora_file_hashes(out) == expected
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_save_makes_tensors_contiguous(tmp_path):
    t = torch.randn(6, 4).t()  # non-contiguous view
    out = lio.save_lora_file(tmp_path / "c.safetensors", {"lora_te_x.lora_down.weight": t}, {})
    assert torch.equal(lio.load_lora_file(out)[0]["lora_te_x.lora_down.weight"], t)


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.safetensors"
    lio.save_lora_file(path, _lora_tensors(), {"ss_network_dim": "4"})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(lio, "_stamp_hashes", boom)
    with pytest.raises(OSError):
        lio.save_lora_file(path, {"lora_te_x.alpha": torch.tensor(1.0)}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_history_appends_entries():
    md = lio.with_history({"ss_network_dim": "4"}, "merge", preset="FACE")
    md = lio.with_history(md, "compress", criterion="SvR16")
    hist = json.loads(md[lio.HISTORY_KEY])
    assert [h["op"] for h in hist] == ["merge", "compress"]
    assert hist[0]["preset"] == "FACE" and "time" in hist[0] and "charframe" in hist[0]
    assert md["ss_network_dim"] == "4"


def test_pt_loads_weights_only(tmp_path):
    tensors = _lora_tensors()
    torch.save(tensors, tmp_path / "a.pt")
    loaded, md = lio.load_lora_file(tmp_path / "a.pt")
    assert md == {} and all(torch.equal(loaded[k], v) for k, v in tensors.items())


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"x": _Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(CharframeError, match=r"evil\.ckpt.*pickled code"):
        lio.load_lora_file(tmp_path / "evil.ckpt")
    assert "pickled code ran" not in capsys.readouterr().out


def test_unknown_suffix_and_missing_and_damaged(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CharframeError, match=r"x\.txt.*unsupported file type"):
        lio.load_lora_file(tmp_path / "x.txt")
    with pytest.raises(CharframeError, match="no such file"):
        lio.load_lora_file(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CharframeError, match=r"bad\.safetensors.*not a readable safetensors"):
        lio.load_lora_file(tmp_path / "bad.safetensors")
