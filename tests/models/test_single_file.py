"""Single-file checkpoints (original LDM key layout), separate VAEs, safe .ckpt loading, offline."""

from __future__ import annotations

import hashlib
import socket
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charframe.models.checkpoint import model_file_hashes
from charframe.errors import CharframeError
from charframe.testing.ldm_layout import to_ldm_checkpoint, vae_to_ldm
from charframe.models.load import load_sd
from charframe.models.tiny import build_tiny_sd
from charframe.testing.tiny_files import save_tiny_config, save_tiny_sd, save_tiny_single_file


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single")
    return {
        "safetensors": save_tiny_single_file(root / "tiny1.safetensors", seed=1),
        "ckpt": save_tiny_single_file(root / "tiny1.ckpt", seed=1),
        "novae": save_tiny_single_file(root / "novae.safetensors", seed=1, with_vae=False),
        "config": save_tiny_config(root / "tiny-config"),
        "folder1": save_tiny_sd(root / "tiny1-diffusers", seed=1),
        "folder2": save_tiny_sd(root / "tiny2-diffusers", seed=2),
    }


@pytest.fixture(scope="module")
def ref1():
    return build_tiny_sd(seed=1)


@pytest.fixture(scope="module")
def ref2():
    return build_tiny_sd(seed=2)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _outputs(comps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNet noise prediction, VAE reconstruction and CLIP hidden states on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    ids = comps.tokenizer("krnk, white background, from above", padding="max_length", max_length=77,
                          return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = comps.text_encoder(ids)[0]
        latents = torch.randn(1, 4, 8, 8, generator=g)
        noise = comps.unet(latents, 10, encoder_hidden_states=hidden).sample
        image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
        recon = comps.vae.decode(comps.vae.encode(image).latent_dist.mean).sample
    return noise, recon, hidden


def test_ldm_layout_round_trips_through_diffusers_converters(ref1) -> None:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    ldm = to_ldm_checkpoint(ref1.unet, ref1.vae, ref1.text_encoder)
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ldm  # upsampler after a plain block
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in ldm  # ... and after an attention block
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # LDM VAE attention is 1x1 conv
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ldm
    back = convert_ldm_unet_checkpoint(ldm, dict(ref1.unet.config))
    assert back.keys() == ref1.unet.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref1.unet.state_dict().items())
    vae = convert_ldm_vae_checkpoint(ldm, dict(ref1.vae.config))
    assert vae.keys() == ref1.vae.state_dict().keys()
    assert all(torch.equal(vae[k], v) for k, v in ref1.vae.state_dict().items())
    te = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    assert te.keys() == ref1.text_encoder.state_dict().keys()


def test_single_file_with_config_equals_diffusers_original(files, ref1) -> None:
    single = load_sd(files["safetensors"], config=files["config"])
    folder = load_sd(files["folder1"])
    for got, want in ((single.unet, ref1.unet), (single.vae, ref1.vae), (single.text_encoder, ref1.text_encoder)):
        assert _same_weights(got, want)
    for a, b in zip(_outputs(single), _outputs(folder)):
        assert torch.equal(a, b)
    assert single.info["base_model_version"] == "sd_v1" and single.info["source"] == "single_file"
    assert single.info["ss_sd_model_name"] == "tiny1.safetensors"
    legacy, sha = model_file_hashes(files["safetensors"])
    assert single.info["ss_sd_model_hash"] == legacy and single.info["ss_new_sd_model_hash"] == sha
    assert single.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert single.noise_scheduler.config.prediction_type == "epsilon"


def test_single_file_without_config_names_the_fix(files) -> None:
    with pytest.raises(CharframeError) as err:
        load_sd(files["safetensors"])
    msg = str(err.value)
    assert msg.startswith(str(files["safetensors"])) and "shapes differ from SD1.5" in msg and "pass config with" in msg


def test_ckpt_loads_weights_only_and_fp16(files, ref1) -> None:
    comps = load_sd(files["ckpt"], config=files["config"], dtype=torch.float16)
    assert comps.unet.dtype == comps.vae.dtype == comps.text_encoder.dtype == torch.float16
    k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert torch.equal(comps.unet.state_dict()[k], ref1.unet.state_dict()[k].half())


def test_lightning_ckpt_training_state_is_tolerated(tmp_path: Path, ref1) -> None:
    # old .ckpt files carry a pytorch_lightning ModelCheckpoint object next to the weights;
    # simulate one without lightning installed
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = cls
    callback = cls()
    callback.best_model_score = torch.tensor(0.1)
    state = {k: v.contiguous() for k, v in to_ldm_checkpoint(ref1.unet, ref1.vae, ref1.text_encoder).items()}
    try:
        torch.save({"state_dict": state, "callbacks": {cls: callback}, "global_step": 470000}, tmp_path / "old.ckpt")
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    cfg = save_tiny_config(tmp_path / "cfg")
    assert _same_weights(load_sd(tmp_path / "old.ckpt", config=cfg).unet, ref1.unet)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickle_with_code_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _Payload(marker)}, evil)
    with pytest.raises(CharframeError) as err:
        load_sd(evil)
    msg = str(err.value)
    assert msg.startswith(str(evil)) and "weights-only" in msg and ".safetensors" in msg
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # proves the payload is real: a plain unpickle runs it
    assert marker.read_text() == "code ran"


def _ldm_vae_ckpt(path: Path, vae: torch.nn.Module, prefix: str = "") -> Path:
    """A VAE file shaped like kl-f8-anime2.ckpt: {"state_dict": {encoder.*, decoder.*, quant_conv.*}}."""
    state = {k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels), prefix).items()}
    state["loss.logvar"] = torch.zeros(())  # training leftovers that real VAE files carry
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    return path


@pytest.mark.parametrize("kind", ["ldm_ckpt", "ldm_safetensors", "diffusers_file", "vae_folder", "model_folder"])
def test_vae_override_replaces_vae_weights(kind: str, files, ref1, ref2, tmp_path: Path) -> None:
    if kind == "ldm_ckpt":
        vae_path = _ldm_vae_ckpt(tmp_path / "kl-f8-tiny.ckpt", ref2.vae)
    elif kind == "ldm_safetensors":
        vae_path = _ldm_vae_ckpt(tmp_path / "vae-tiny.safetensors", ref2.vae, prefix="first_stage_model.")
    elif kind == "diffusers_file":
        vae_path = tmp_path / "diffusion_pytorch_model.safetensors"
        save_file({k: v.contiguous() for k, v in ref2.vae.state_dict().items()}, str(vae_path))
    elif kind == "vae_folder":
        vae_path = files["folder2"] / "vae"
    else:
        vae_path = files["folder2"]
    comps = load_sd(files["safetensors"], vae=vae_path, config=files["config"])
    assert _same_weights(comps.vae, ref2.vae) and not _same_weights(comps.vae, ref1.vae)
    assert _same_weights(comps.unet, ref1.unet)
    assert comps.info["ss_vae_name"] == vae_path.name
    if vae_path.is_file():
        assert comps.info["ss_new_vae_hash"] == hashlib.sha256(vae_path.read_bytes()).hexdigest()


def test_vae_override_on_diffusers_folder_and_mismatch(files, ref2, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    comps = load_sd(files["folder1"], vae=_ldm_vae_ckpt(tmp_path / "v.ckpt", ref2.vae))
    assert _same_weights(comps.vae, ref2.vae)
    wide = AutoencoderKL(**{**dict(ref2.vae.config), "latent_channels": 16})
    bad = _ldm_vae_ckpt(tmp_path / "flux-like.safetensors", wide)
    with pytest.raises(CharframeError, match=r"flux-like.safetensors: VAE shapes differ.*SD1.x"):
        load_sd(files["folder1"], vae=bad)


def test_checkpoint_without_vae_needs_vae(files, ref2, tmp_path: Path) -> None:
    with pytest.raises(CharframeError, match=r"novae.safetensors: the checkpoint has no VAE.*pass one with vae"):
        load_sd(files["novae"], config=files["config"])
    comps = load_sd(files["novae"], vae=files["folder2"], config=files["config"])
    assert _same_weights(comps.vae, ref2.vae)


def test_loading_never_touches_the_network(files, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    comps = load_sd(files["safetensors"], vae=files["folder2"], config=files["config"])
    load_sd(files["folder1"])
    from charframe.models.tokenizer import clip_tokenizer

    assert clip_tokenizer()("a photo of a cat").input_ids[1:-1] == [320, 1125, 539, 320, 2368]
    assert comps.info["source"] == "single_file"


def test_file_hashes_follow_sd_scripts(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    f = tmp_path / "m.safetensors"
    f.write_bytes(data)
    legacy, sha = model_file_hashes(f)
    assert legacy == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert sha == hashlib.sha256(data).hexdigest()
    assert model_file_hashes(tmp_path) == ("IsADirectory", "IsADirectory")


def test_unknown_suffix_and_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(CharframeError, match=r"m.gguf: unknown model file type"):
        load_sd(tmp_path / "m.gguf")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CharframeError, match=r"broken.safetensors: not a readable .safetensors"):
        load_sd(tmp_path / "broken.safetensors")



def test_ema_weights_in_checkpoint_are_not_used_for_training(tmp_path: Path, ref1, files) -> None:
    state = {k: v.contiguous() for k, v in to_ldm_checkpoint(ref1.unet, ref1.vae, ref1.text_encoder).items()}
    # original training checkpoints also hold EMA copies, flattened as model_ema.<name without dots>
    ema = {"model_ema." + k.removeprefix("model.").replace(".", ""): torch.zeros_like(v)
           for k, v in state.items() if k.startswith("model.diffusion_model.")}
    save_file(state | ema, str(tmp_path / "with-ema.safetensors"))
    comps = load_sd(tmp_path / "with-ema.safetensors", config=files["config"])
    assert _same_weights(comps.unet, ref1.unet)
