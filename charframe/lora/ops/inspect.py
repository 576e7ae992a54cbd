"""`charframe inspect`: what a LoRA file is — model family, type, modules per block, ranks, alphas, size, metadata."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from charframe.families.family import get_family
from charframe.lora import io as lio
from charframe.lora.blocks import BLOCK_IDS
from charframe.lora.file_family import context_width, describe
from charframe.lora.keys import block_of
from charframe.lora.format import network_type
from charframe.models.embeddings import bundle_groups

#: Metadata shown first (sd-scripts keys users look for); long values are shortened unless asked.
KEY_METADATA = (
    "ss_output_name", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
    "ss_base_model_version", "ss_sd_model_name", "ss_learning_rate", "ss_max_train_steps", "ss_seed",
    "ss_mixed_precision", "ss_training_comment", "sshs_model_hash", "sshs_legacy_hash",
)  # fmt: skip


@dataclass
class InspectReport:
    path: Path
    file_bytes: int
    network_type: str
    kinds: Counter = field(default_factory=Counter)
    blocks: dict[str, int] = field(default_factory=dict)  # block id → module count, in block order
    outside: list[str] = field(default_factory=list)
    ranks: Counter = field(default_factory=Counter)
    alphas: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    conv3x3: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    family: str | None = None  # the model family it was made for (None: nothing in the file says)
    family_evidence: str = ""
    embeddings: dict[str, int] = field(default_factory=dict)  # bundled embedding → its vector count

    @property
    def n_modules(self) -> int:
        return sum(self.blocks.values()) + len(self.outside)


def inspect_file(path: str | os.PathLike) -> InspectReport:
    """Read and check a file, then count what it holds."""
    net = lio.read_network(path)
    rep = InspectReport(Path(path), Path(path).stat().st_size, network_type(net), metadata=dict(net.metadata),
                        family=net.family)
    width = context_width(net.modules)
    prefixes = sorted({name.split("_")[0] + "_" + name.split("_")[1] for name in net.modules})
    rep.family_evidence = ", ".join(prefixes) + (f"; {width}-wide text context" if width else "")
    counts: Counter = Counter()
    for name, m in net.modules.items():
        block = block_of(name)
        if block is None:
            rep.outside.append(name)
        else:
            counts[block] += 1
        rep.kinds[m.kind] += 1
        rep.ranks[m.rank if m.rank is not None else "full"] += 1
        rep.alphas["none" if m.alpha is None else f"{m.alpha:g}"] += 1
        rep.dtypes.update(str(t.dtype).removeprefix("torch.") for t in m.tensors.values())
        rep.conv3x3 += m.kernel not in ((), (1, 1))
    rep.blocks = {b: counts[b] for b in BLOCK_IDS if counts[b]}
    for name, keys in bundle_groups(net.bundle).items():
        t = net.bundle[next(iter(keys.values()))]  # (vectors, width), or one vector
        rep.embeddings[name] = int(t.shape[0]) if t.dim() > 1 else 1
    return rep


def _counter(c: Counter) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _short(value: str, limit: int) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= limit else value[: limit - 1] + f"… ({len(value)} chars)"


def format_report(rep: InspectReport, all_metadata: bool = False, all_metadata_hint: str = "all_metadata") -> str:
    """Human-readable report; `all_metadata` prints every metadata key in full (the hint names that switch)."""
    family = describe(get_family(rep.family) if rep.family else None)
    lines = [
        f"{rep.path}",
        f"  family    {family}   ({rep.family_evidence})",
        f"  type      {rep.network_type}   ({rep.n_modules} modules, {rep.conv3x3} with 3x3 conv)",
        f"  size      {rep.file_bytes / 2**20:.1f} MiB   dtypes: {_counter(rep.dtypes)}",
        f"  ranks     {_counter(rep.ranks)}",
        f"  alphas    {_counter(rep.alphas)}",
        "  blocks    " + "  ".join(f"{b}:{n}" for b, n in rep.blocks.items()),
    ]
    if rep.outside:
        lines.append(f"  no block  {', '.join(rep.outside)} (weight 1 in merges)")
    if rep.embeddings:
        lines.append("  bundles   " + ", ".join(f"{n} ({v} vector{'s' * (v != 1)})" for n, v in rep.embeddings.items())
                     + " (textual-inversion embeddings: write the name in a prompt)")
    keys = list(rep.metadata) if all_metadata else [k for k in KEY_METADATA if k in rep.metadata]
    if "charframe_history" in rep.metadata and not all_metadata:
        keys.append("charframe_history")
    if keys:
        lines.append("  metadata")
        for k in keys:
            lines.append(f"    {k} = {rep.metadata[k] if all_metadata else _short(rep.metadata[k], 200)}")
        hidden = len(rep.metadata) - len(keys)
        if hidden > 0:
            lines.append(f"    … {hidden} more keys ({all_metadata_hint} shows them)")
    return "\n".join(lines)
