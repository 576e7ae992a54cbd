"""A tiny random Stable Diffusion 1.x model with the real architecture and module names.

Used by the tests (no model hub is reachable) and by `charframe demo` when no real model is given.
The UNet keeps SD1.x's layout — 4 down levels (3 cross-attention + 1 plain), 2 layers per block,
a mid block and 3 resnets per up block — so LoRA key names and the 26-block map are the real ones;
only the channel widths, the CLIP depth and the vocabulary are small. Everything is built from a seed,
so two builds are identical.
"""

from __future__ import annotations

import json
from pathlib import Path

from charframe.models.components import SDComponents
from charframe.models.single_file import sd15_config
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


def write_tiny_tokenizer(directory: str | Path) -> Path:
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
                "pad_token": "<|endoftext|>",
            }
        ),
        encoding="utf-8",
    )
    return directory


def build_tiny_sd(seed: int = 0, tokenizer_dir: str | Path | None = None) -> SDComponents:
    """Build the tiny model in memory, deterministically from `seed` (fp32, CPU, eval mode)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if tokenizer_dir is None:
        vocab, merges = tiny_vocab_and_merges()
        tokenizer = CLIPTokenizer(
            vocab=vocab,
            merges=[tuple(m.split(" ")) for m in merges],
            unk_token="<|endoftext|>",
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            model_max_length=77,
        )
    else:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tokenizer_dir)))
    vocab_size = len(tokenizer)

    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        text_config = CLIPTextConfig(
            vocab_size=vocab_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TINY_CLIP,
        )
        text_encoder = CLIPTextModel(text_config)
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
