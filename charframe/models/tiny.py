"""Tiny random Stable Diffusion models (SD1.x and SDXL) with the real architectures and module names.

Used by the tests (no model hub is reachable) and by `charframe demo` when no real model is given.
The SD1.x UNet keeps SD1.x's layout — 4 down levels (3 cross-attention + 1 plain), 2 layers per block,
a mid block and 3 resnets per up block — so LoRA key names and the 26-block map are the real ones;
only the channel widths, the CLIP depth and the vocabulary are small. The SDXL one keeps SDXL's — 3 levels
(plain, then 2 cross-attention ones with deeper transformers), the "text_time" added embedding fed by the
second text encoder's pooled projection and 6 size/crop time ids, two CLIP text encoders (the second with a
projection, of another width, as CLIP-L and OpenCLIP-G are) — so its LoRA keys, block map and single-file
layout are SDXL's. Everything is built from a seed, so two builds are identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charframe.models.components import SDComponents
from charframe.models.single_file import family_config, sd15_config
from charframe.models.tokenizer import bytes_to_unicode

TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=2,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=4,
)

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=4,
    sample_size=64,
    scaling_factor=0.18215,
)

TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
)

# SDXL: text widths 32 (CLIP-L's stand-in) + 64 (OpenCLIP-G's) = a 96-wide context; the added embedding
# reads the 64-wide pooled projection and 6 time ids of 8 each.
TINY_SDXL_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32)
TINY_SDXL_CLIP_2 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                        max_position_embeddings=77, hidden_act="gelu", projection_dim=64)
TINY_SDXL_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(16, 32, 32),
    layers_per_block=2,
    transformer_layers_per_block=(1, 1, 2),
    norm_num_groups=8,
    cross_attention_dim=TINY_SDXL_CLIP["hidden_size"] + TINY_SDXL_CLIP_2["hidden_size"],
    attention_head_dim=(2, 4, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=TINY_SDXL_CLIP_2["projection_dim"] + 6 * 8,
)

# Words the tiny tokenizer knows as whole tokens, so captions tokenize to realistic lengths.
TINY_WORDS = (
    "white black simple background from horizontal above below front side behind upper full body "
    "standing straight nude completely bare shoulders nipples collarbone abs ribs blade blades median "
    "furrow navel looking at viewer away smile open mouth blush girl boy krnk tyank demo 1girl solo "
    "short long hair cat ears sailor uniform"
).split()


def tiny_vocab_and_merges(words: tuple[str, ...] = TINY_WORDS) -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary: the byte alphabet (with and without `</w>`) plus whole words."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    seen = set(tokens)
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for nxt in parts[1:]:
            merged = current + nxt
            if merged not in seen:
                merges.append(f"{current} {nxt}")
                tokens.append(merged)
                seen.add(merged)
            current = merged
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tiny_tokenizer(directory: str | Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write `vocab.json` + `merges.txt` (+ config) loadable by `CLIPTokenizer.from_pretrained`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8"
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": pad_token,
            }
        ),
        encoding="utf-8",
    )
    return directory


def tiny_tokenizer(directory: str | Path | None = None, pad_token: str = "<|endoftext|>") -> Any:
    """The tiny CLIP tokenizer, built in memory, or written to `directory` and loaded back from there."""
    from transformers import CLIPTokenizer

    if directory is None:
        vocab, merges = tiny_vocab_and_merges()
        return CLIPTokenizer(
            vocab=vocab,
            merges=[tuple(m.split(" ")) for m in merges],
            unk_token="<|endoftext|>",
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token=pad_token,
            model_max_length=77,
        )
    return CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(directory, pad_token)))


def _text_config(tokenizer: Any, **kw: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kw)


def build_tiny_sd(seed: int = 0, tokenizer_dir: str | Path | None = None) -> SDComponents:
    """Build the tiny model in memory, deterministically from `seed` (fp32, CPU, eval mode)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer(tokenizer_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        text_encoder = CLIPTextModel(_text_config(tokenizer, **TINY_CLIP))
    for m in (unet, vae, text_encoder):
        m.eval()
    scheduler = DDPMScheduler.from_config(sd15_config().scheduler)
    return SDComponents(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        noise_scheduler=scheduler,
        info={"name": "charframe-tiny-sd15", "base_model_version": "sd_v1", "seed": seed, "tiny": True},
    )


def build_tiny_sdxl(seed: int = 0, tokenizer_dir: str | Path | None = None, *, prediction_type: str = "epsilon") -> SDComponents:
    """The tiny SDXL model, deterministically from `seed` (fp32, CPU, eval mode); `tokenizer_dir` gets
    `tokenizer/` and `tokenizer_2/` (pad "!") when given. `prediction_type` "v_prediction" makes it a
    NoobAI-style v-prediction model (zero terminal SNR)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(tokenizer_dir) if tokenizer_dir is not None else None
    tokenizer = tiny_tokenizer(folder / "tokenizer" if folder else None)
    tokenizer_2 = tiny_tokenizer(folder / "tokenizer_2" if folder else None, pad_token="!")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_SDXL_UNET)
        vae = AutoencoderKL(**(TINY_VAE | {"scaling_factor": 0.13025}))
        text_encoder = CLIPTextModel(_text_config(tokenizer, **TINY_SDXL_CLIP))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, **TINY_SDXL_CLIP_2))
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval()
    schedule = dict(family_config("sdxl").scheduler, prediction_type=prediction_type)
    if prediction_type == "v_prediction":
        schedule["rescale_betas_zero_snr"] = True
    return SDComponents(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        noise_scheduler=DDPMScheduler.from_config(schedule),
        info={"name": "charframe-tiny-sdxl", "base_model_version": "sdxl_base_v1-0", "seed": seed, "tiny": True},
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, family="sdxl",
    )
