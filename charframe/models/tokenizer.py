"""The CLIP tokenizers of SD1.x and SDXL, offline.

Single-file checkpoints carry no tokenizer. charframe ships CLIP's BPE merge list
(`data/clip/merges.txt.gz`, the 48,894 merges of the original `bpe_simple_vocab_16e6.txt`) and
derives the vocabulary from it the way CLIP does: the 256 byte symbols, the same with `</w>`, one
token per merge in order, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). Token ids are
therefore identical to `openai/clip-vit-large-patch14`'s. SDXL's second tokenizer (OpenCLIP ViT-bigG) has the same
vocabulary and merges and pads with "!" (id 0) instead of `<|endoftext|>`: `clip_tokenizer(pad_token="!")`.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from charframe.util.files import atomic_write_text

MERGES_RESOURCE = "data/clip/merges.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary is 49,408 = 2*256 byte tokens + merges + 2 specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte-level alphabet: every byte maps to a printable character (order matters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def vocab_from_merges(merges: list[str]) -> dict[str, int]:
    """CLIP's token → id table, derived from its merge list."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + [m.replace(" ", "") for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


@lru_cache(maxsize=1)
def clip_merges() -> tuple[str, ...]:
    """The shipped merge list ("a b" per line), in priority order."""
    blob = resources.files("charframe").joinpath(MERGES_RESOURCE).read_bytes()
    merges = gzip.decompress(blob).decode("utf-8").splitlines()
    if len(merges) != NUM_MERGES:
        raise RuntimeError(f"charframe/{MERGES_RESOURCE}: expected {NUM_MERGES} merges, found {len(merges)}")
    return tuple(merges)


def clip_tokenizer(model_max_length: int = MAX_LENGTH, pad_token: str = EOS) -> Any:
    """A `transformers.CLIPTokenizer` equal to SD1.x's (pad = `<|endoftext|>`, 77 tokens), or with another
    pad token (SDXL's `tokenizer_2`: "!")."""
    from transformers import CLIPTokenizer

    merges = list(clip_merges())
    return CLIPTokenizer(
        vocab=vocab_from_merges(merges),
        merges=[tuple(m.split(" ")) for m in merges],
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=pad_token,
        model_max_length=model_max_length,
    )


HUB_ID = "openai/clip-vit-large-patch14"  # the tokenizer SD1.x trainers ask the hub for


def write_tokenizer_files(directory: str | Path, pad_token: str = EOS) -> Path:
    """Write the tokenizer as a Hugging Face tokenizer folder (`vocab.json`, `merges.txt`, configs).

    This classic layout loads in every transformers release, slow or fast, so an external trainer
    (sd-scripts' `--tokenizer_cache_dir`) can use charframe's tokenizer instead of downloading it.
    """
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = list(clip_merges())
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    config = {**specials, "model_max_length": MAX_LENGTH, "do_lower_case": True, "errors": "replace",
              "add_prefix_space": False, "tokenizer_class": "CLIPTokenizer"}
    files = {
        "vocab.json": json.dumps(vocab_from_merges(merges), ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "special_tokens_map.json": json.dumps(specials, indent=2),
        "tokenizer_config.json": json.dumps(config, indent=2),
    }
    for name, text in files.items():
        atomic_write_text(directory / name, text)
    return directory


def folder_tokenizer(directory: Path | None, pad_token: str = EOS) -> Any:
    """A diffusers folder's own tokenizer when it has one (`vocab.json`), else the shipped CLIP tokenizer
    with `pad_token`."""
    if directory is not None and (Path(directory) / "vocab.json").is_file():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
    return clip_tokenizer(pad_token=pad_token)
