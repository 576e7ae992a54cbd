"""A small CLIP text encoder with the real 49,408-token vocabulary whose weights come from a fixed
recipe (one seeded generator per parameter), so the same model can be rebuilt in any environment,
such as the sd-scripts venv that recorded `data/sd_scripts_text.safetensors`."""

from __future__ import annotations

import torch

CAPTIONS = [
    "krnk",
    "krnk, white background, black background, simple background, from front, upper body",
    ", ".join(f"tag{i} word{i}" for i in range(40)),  # about 160 tokens: 2-3 chunks
    " ".join(["very long caption"] * 90),  # past 225 tokens: truncated in every mode
]
MODES = (None, 150, 225)  # max_token_length
CLIP_SKIPS = (1, 2)


def small_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
    te = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(te.state_dict().items())):
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.3)
    return te
