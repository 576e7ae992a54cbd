"""The embeddings one generation run uses, as WebUI would: the project's `embeddings/` folder (`[paths] embeddings`)
and the embeddings bundled in the LoRAs it applies (a face LoRA trained with pivotal tuning carries its trigger).

Everything is read and checked before the model loads (`prompt_embeddings`; only files whose names the prompts
mention are read) and checked against the loaded text encoder's width after (`PromptEmbeddings.lookup`). When a
folder file and a bundle share a name the folder's wins, as WebUI's Lora extension skips such a bundle.
A LoRA bundling a trigger was trained with the trigger in every caption, so `with_triggers` puts it first in a
prompt that lacks it (the body set generated with a pivotal face LoRA names the face's trigger).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from charframe.generation.prompt import chunk_tokens, used_embeddings
from charframe.models.embeddings import (
    Embedding, EmbeddingSet, check_widths, load_for_prompts, read_bundle, ti_hashes, token_width,
)
from charframe.project import project_dirs
from charframe.prompt_syntax import prompt_schedule

log = logging.getLogger(__name__)


@dataclass
class PromptEmbeddings:
    """Folder embeddings the prompts call, and the bundles of the LoRAs in use."""

    files: list[Embedding] = field(default_factory=list)
    bundled: list[Embedding] = field(default_factory=list)

    def lookup(self, tokenizer: Any, text_encoder: Any) -> EmbeddingSet:
        """The set prompts are encoded with, after checking every width against `text_encoder`."""
        check_widths(self.files + self.bundled, token_width(text_encoder))
        names = {e.name for e in self.files}
        for e in self.bundled:
            if e.name in names:
                log.warning('%s: skipping the bundled embedding "%s": one of that name is in the embeddings folder',
                            e.source, e.name)
        return EmbeddingSet(tokenizer, [e for e in self.bundled if e.name not in names] + self.files)

    def with_bundle(self, lora: str | os.PathLike | None) -> "PromptEmbeddings":
        """The same folder embeddings with the bundle of `lora` (none: only the folder's)."""
        return PromptEmbeddings(self.files, read_bundle(lora) if lora is not None else [])

    def calling(self, root: str | os.PathLike, texts: Iterable[str]) -> "PromptEmbeddings":
        """The same bundles with the folder embeddings `texts` may call."""
        return PromptEmbeddings(load_for_prompts(embeddings_folder(root), texts), self.bundled)


def embeddings_folder(root: str | os.PathLike) -> Path:
    return project_dirs(root).embeddings


def prompt_embeddings(root: str | os.PathLike, texts: Iterable[str],
                      loras: Sequence[str | os.PathLike] = ()) -> PromptEmbeddings:
    """The folder embeddings `texts` may call and the bundles of `loras`, read and checked (one line on a bad file)."""
    return PromptEmbeddings(bundled=[e for lora in loras for e in read_bundle(lora)]).calling(root, texts)


def with_triggers(prompt: str, bundled: Iterable[Embedding]) -> str:
    """`prompt` with each bundled trigger name it lacks put first (`krnk, 1girl, …`)."""
    missing = [e.name for e in bundled
               if not re.search(rf"(?<![\w-]){re.escape(e.name)}(?![\w-])", prompt, flags=re.IGNORECASE)]
    return ", ".join(dict.fromkeys(missing)) + (", " if missing and prompt else "") + prompt if missing else prompt


def _used_in_batch(texts: Sequence[str], tokenizer: Any, embeddings: EmbeddingSet) -> list[Embedding]:
    """The embeddings one WebUI encoder call meets for a batch of texts (a prompt's editing schedule), in its order:
    chunk by chunk, each chunk over the batch."""
    chunked = [chunk_tokens(t, tokenizer, embeddings) for t in dict.fromkeys(texts)]
    return [e for i in range(max(map(len, chunked))) for chunks in chunked if i < len(chunks)
            for e in used_embeddings([chunks[i]])]


def ti_field(prompt: str, negative: str, tokenizer: Any, embeddings: EmbeddingSet | None, steps: int = 1) -> str:
    """The infotext's `TI hashes` value for this prompt pair ("" when no embedding is used): each side's texts
    through its `steps` (prompt editing gives several), the prompt's embeddings before the negative's."""
    if not embeddings:
        return ""
    sides = [[text for _, text in prompt_schedule(t, steps)] for t in (prompt, negative)]
    return ti_hashes(*(_used_in_batch(texts, tokenizer, embeddings) for texts in sides))
