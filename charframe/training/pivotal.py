"""Pivotal tuning: a trigger embedding trained together with the LoRA (`[plan.pivotal]`, see `plan.Pivotal`).

The captions' trigger word (the character keyword, `krnk`) is replaced by N trainable vectors wherever its tokens
occur, found as WebUI finds an embedding's name in a prompt, so the trained LoRA is used in WebUI by writing the
same word. The vectors start from a text's token embeddings (WebUI's "create embedding" rule), have their own
parameter group and learning rate, and stop changing after the planned fraction of the run (their gradient is
dropped, so no optimizer — AdamW's decay included — touches them). Embeddings of earlier stages (`reuse`: the face
LoRA's bundle in the body stage) are called by the captions with fixed vectors.

Where they go: bundled in the LoRA file (`bundle_emb.<name>.string_to_param.*`, one key each, float32 — the key
WebUI's Lora extension registers), and each trained one as a standalone file `<LoRA stem>-embeddings/<name>.safetensors`
(drop the folder into WebUI's `embeddings/`: the file name is the word). A resumable state keeps the trigger
under its bundle key in the state's network file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charframe.errors import CharframeError
from charframe.families.family import get_family
from charframe.models.embeddings import (
    Embedding, EmbeddingSet, bundle_key, bundle_tensors, bundled_embeddings, check_name, check_widths, init_vectors,
    read_bundle, read_embedding, token_width, write_embedding,
)
from charframe.training.data import DatasetGroup
from charframe.training.plan import Pivotal

log = logging.getLogger(__name__)

EMBEDDINGS_DIR_SUFFIX = "-embeddings"


@dataclass
class PivotalRun:
    """The embeddings of one run: the trainable trigger (or none) and the fixed ones its captions call."""

    spec: Pivotal
    steps: int
    trigger: Embedding | None = None
    fixed: list[Embedding] = field(default_factory=list)
    lookup: EmbeddingSet | None = None

    @property
    def parameter(self) -> torch.nn.Parameter | None:
        return self.trigger.vectors if self.trigger is not None else None

    @property
    def stop_step(self) -> int:
        return self.spec.stop_step(self.steps)

    def embeddings(self) -> list[Embedding]:
        return ([self.trigger] if self.trigger is not None else []) + self.fixed

    def param_group(self, explicit_lr: bool) -> list[dict[str, Any]]:
        """The trigger's optimizer group (its own rate; none when the optimizer sets its own rates)."""
        if self.trigger is None:
            return []
        if not explicit_lr:
            log.warning("this optimizer sets its own rates: the trigger embedding's lr %g is not used", self.spec.lr)
        return [{"params": [self.trigger.vectors], **({"lr": self.spec.lr} if explicit_lr else {})}]

    def before_update(self, step: int) -> None:
        """Called with the 1-based number of the optimizer step about to run: past the stop step the trigger's
        gradient is dropped (a parameter without a gradient is left alone by every optimizer)."""
        p = self.parameter
        if p is not None and step > self.stop_step:
            p.grad = None
            p.requires_grad_(False)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a resumable state keeps: the trigger under its bundle key (full precision)."""
        return bundle_tensors([self.trigger]) if self.trigger is not None else {}

    def bundle(self) -> dict[str, torch.Tensor]:
        """The LoRA file's bundle keys: every embedding the captions called."""
        return bundle_tensors(self.embeddings())

    def write_standalone(self, lora_file: Path, metadata: dict[str, str]) -> list[Path]:
        """`<stem>-embeddings/<trigger>.safetensors` beside the LoRA (the trained trigger only)."""
        if self.trigger is None:
            return []
        folder = standalone_dir(lora_file)
        folder.mkdir(parents=True, exist_ok=True)
        return [write_embedding(folder / f"{self.trigger.name}.safetensors", self.trigger, metadata)]


def standalone_dir(lora_file: Path) -> Path:
    return lora_file.with_name(lora_file.stem + EMBEDDINGS_DIR_SUFFIX)


def read_reused(path: str) -> list[Embedding]:
    """The embeddings of a `reuse` file: a LoRA's bundle, or one embedding file."""
    p = Path(path)
    if not p.is_file():
        raise CharframeError(f"{p}: no such file to reuse embeddings from; train the stage that writes it first",
                             param="pivotal_reuse")
    bundle = read_bundle(p) if p.suffix.lower() in (".safetensors", ".sft", ".pt", ".ckpt") else []
    if bundle:
        return bundle
    try:
        return [read_embedding(p)]
    except CharframeError as e:
        if "a LoRA file" in str(e):
            raise CharframeError(f"{p}: a LoRA without bundled embeddings; train it with pivotal tuning on, or "
                                 "drop it from {param}", param="pivotal_reuse") from None
        raise


def _distinct(embeddings: list[Embedding]) -> list[Embedding]:
    """One embedding per name: the same name with the same vectors in two files (two outfits' body LoRAs both carry
    the face's trigger) is one embedding; with different vectors it is refused."""
    out: dict[str, Embedding] = {}
    for e in embeddings:
        if e.name in out and not torch.equal(out[e.name].vectors, e.vectors):
            raise CharframeError(f"{out[e.name].source} and {e.source} hold different embeddings called {e.name!r}; "
                                 "reuse one of them", param="pivotal_reuse")
        out.setdefault(e.name, e)
    return list(out.values())


def class_word(group: DatasetGroup, trigger: str) -> str:
    """The class word after the trigger in the class tokens (`krnk girl` → `girl`), else ""."""
    for d in group.datasets:
        for s in d.subsets:
            words = (s.class_tokens or "").split()
            if not s.is_reg and len(words) > 1 and words[0].lower() == trigger.lower():
                return " ".join(words[1:])
    return ""


def _check_in_captions(group: DatasetGroup, tokenizer: Any, trigger: Embedding, dataset: str) -> None:
    lookup = EmbeddingSet(tokenizer, [trigger])
    captions = {e.caption for d in group.datasets for e in d.images if not e.is_reg}
    for caption in captions:
        ids = tokenizer(caption, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
        if any(lookup.find(ids, i) for i in range(len(ids))):
            return
    _no_caption(dataset, trigger.name)


def check_pivotal(spec: Pivotal, group: DatasetGroup, dataset: str) -> None:
    """What can be checked before any model loads: the trigger's name, that a caption has it (as text), and that
    every reused file bundles or is an embedding (one line naming the problem)."""
    if not spec.enabled:
        return
    for path in spec.reuse:
        read_reused(path)
    if spec.trigger:
        check_name(spec.trigger, "pivotal trigger")
        word = re.compile(rf"(?<![\w-]){re.escape(spec.trigger)}(?![\w-])", re.IGNORECASE)
        if not any(word.search(e.caption) for d in group.datasets for e in d.images if not e.is_reg):
            _no_caption(dataset, spec.trigger)


def _no_caption(dataset: str, trigger: str) -> None:
    raise CharframeError(f"{dataset}: no caption holds the pivotal trigger {trigger!r}; caption the images with it "
                         "(the keyword part of the folder name) or choose the keyword as {param}", param="pivotal_trigger")


def setup_pivotal(spec: Pivotal, steps: int, group: DatasetGroup, comps: Any, dataset: str, *,
                  resumed: dict[str, torch.Tensor] | None = None,
                  continued: dict[str, torch.Tensor] | None = None, continued_from: str = "") -> PivotalRun | None:
    """The run's embeddings (None when pivotal tuning is off). The trigger starts from, in order: a resumed state's
    vectors (`resumed` bundle keys), the same name in the LoRA continued from (`continued`), or `init_text`."""
    if not spec.enabled:
        return None
    if get_family(comps.family).data.get("training", {}).get("conditioning", "clip") != "clip":
        raise CharframeError(f"pivotal tuning is done for SD1.x models (one CLIP text encoder); "
                             f"{get_family(comps.family).name} is not supported yet: train without {{param}}",
                             param="pivotal_trigger")
    fixed = _distinct([e for path in spec.reuse for e in read_reused(path)])
    names = [e.name for e in fixed]
    width = token_width(comps.text_encoder)
    trigger = None
    if spec.trigger:
        name = check_name(spec.trigger, "pivotal trigger")
        if name in names:
            raise CharframeError(f"pivotal trigger {name!r} is also a reused embedding; train another word or drop "
                                 "the file that bundles it from {param}", param="pivotal_reuse")
        vectors = _start_vectors(spec, name, group, comps, resumed, continued, continued_from)
        if vectors.shape != (spec.vectors, width):
            raise CharframeError(f"{continued_from or 'the saved state'}: embedding {name!r} has shape "
                                 f"{tuple(vectors.shape)}, this run trains ({spec.vectors}, {width}); use the same "
                                 "{param}", param="pivotal_vectors")
        device = comps.text_encoder.device
        trigger = Embedding(name, torch.nn.Parameter(vectors.to(device, torch.float32)), "trained", "")
        _check_in_captions(group, comps.tokenizer, trigger, dataset)
    check_widths(fixed, width)
    fixed = [Embedding(e.name, e.vectors.to(comps.text_encoder.device), e.source, e.shorthash) for e in fixed]
    run = PivotalRun(spec, steps, trigger, fixed)
    run.lookup = EmbeddingSet(comps.tokenizer, run.embeddings())
    trained = [f"{trigger.name} ({trigger.count} vectors, lr {spec.lr:g}, until step {run.stop_step})"] if trigger else []
    log.info("pivotal tuning: %s", ", ".join(trained + [f"{e.name} (reused, {e.count} vectors)" for e in fixed]))
    return run


def _start_vectors(spec: Pivotal, name: str, group: DatasetGroup, comps: Any, resumed: dict[str, torch.Tensor] | None,
                   continued: dict[str, torch.Tensor] | None, continued_from: str) -> torch.Tensor:
    key = bundle_key(name)
    if resumed and key in resumed:
        return resumed[key].float()
    if continued:
        found = {e.name: e for e in bundled_embeddings(continued, continued_from, Path(continued_from).stem)}
        if name in found:
            log.info("%s: continuing the trigger embedding %s", continued_from, name)
            return found[name].vectors
    text = spec.init_text or class_word(group, name)
    if not text:
        log.warning("pivotal trigger %s: no init text and no class word after it in the class tokens; starting "
                    "from zeros", name)
    return init_vectors(comps.tokenizer, comps.text_encoder, text, spec.vectors)
