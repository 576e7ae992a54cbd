"""The metadata inside a trained LoRA: sd-scripts' `ss_*` keys and the `modelspec.*` keys.

WebUI's metadata viewer, the Additional Networks extension and ComfyUI read `ss_*` (network type,
dim/alpha, tag frequency, dataset folders, base model); `modelspec.*` (SAI model spec) tells any
loader the architecture. Values are strings, nested ones JSON, exactly as sd-scripts stores them.
The `sshs_*` file hashes are added when the file is written (`charframe.lora.io.save_lora_file`).
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from charframe import __version__
from charframe.training.dataset import DatasetGroup
from charframe.training.recipes import TrainPlan

MODELSPEC_VERSION = "1.0.1"
ARCH_SD_V1_LORA = "stable-diffusion-v1/lora"


def optimizer_description(plan: TrainPlan, optimizer_class: str) -> str:
    """`ss_optimizer` as sd-scripts writes it: the class path and its arguments."""
    args = ",".join(f"{k}={v}" for k, v in plan.optimizer_args.items())
    return optimizer_class + (f"({args})" if args else "")


def training_metadata(
    plan: TrainPlan,
    group: DatasetGroup,
    model_info: dict[str, Any],
    *,
    session_id: int,
    started_at: float,
    optimizer: str,
    num_epochs: int,
    batches_per_epoch: int,
    num_processes: int = 1,
    mixed_precision: str | None = None,
    gradient_checkpointing: bool | None = None,
) -> dict[str, str]:
    """Everything known when training starts (steps/epoch/finish time are added per save).

    `mixed_precision`/`gradient_checkpointing`: what the run really used (default: the plan's).
    """
    d0 = group.datasets[0]
    md: dict[str, Any] = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": plan.output_name,
        "ss_learning_rate": plan.learning_rate,
        "ss_text_encoder_lr": plan.text_encoder_lr,
        "ss_unet_lr": plan.learning_rate,
        "ss_num_train_images": group.num_train_images,
        "ss_num_reg_images": group.num_reg_images,
        "ss_num_batches_per_epoch": batches_per_epoch,
        "ss_num_epochs": num_epochs,
        "ss_gradient_checkpointing": plan.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing,
        "ss_gradient_accumulation_steps": 1,
        "ss_max_train_steps": plan.steps,
        "ss_lr_warmup_steps": 0,
        "ss_lr_scheduler": plan.lr_scheduler,
        "ss_network_module": plan.network_module,
        "ss_network_dim": plan.dim,
        "ss_network_alpha": plan.network_alpha,
        "ss_network_args": json.dumps(plan.network_args) if plan.network_args else None,
        "ss_mixed_precision": mixed_precision or plan.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": False,
        "ss_base_model_version": model_info.get("base_model_version", "sd_v1"),
        "ss_clip_skip": plan.clip_skip,
        "ss_max_token_length": plan.max_token_length,
        "ss_cache_latents": False,
        "ss_seed": plan.seed,
        "ss_noise_offset": plan.noise_offset or None,
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": plan.max_grad_norm,
        "ss_prior_loss_weight": plan.prior_loss_weight,
        "ss_batch_size_per_device": d0.batch_size,
        "ss_total_batch_size": d0.batch_size * num_processes,
        "ss_resolution": f"({d0.resolution[0]}, {d0.resolution[1]})",
        "ss_enable_bucket": d0.enable_bucket,
        "ss_bucket_no_upscale": d0.bucket_no_upscale,
        "ss_min_bucket_reso": d0.min_bucket_reso,
        "ss_max_bucket_reso": d0.max_bucket_reso,
        "ss_datasets": json.dumps(_datasets_info(group)),
        "ss_tag_frequency": json.dumps(group.tag_frequency()),
        "ss_dataset_dirs": json.dumps(group.dataset_dirs()),
        "ss_reg_dataset_dirs": json.dumps(group.dataset_dirs(reg=True)),
        "ss_sd_model_name": model_info.get("ss_sd_model_name", model_info.get("name", "")),
        "ss_training_comment": f"charframe {__version__}: {plan.output_name}",
    }
    for key in ("ss_sd_model_hash", "ss_new_sd_model_hash", "ss_vae_name", "ss_vae_hash", "ss_new_vae_hash"):
        if key in model_info:
            md[key] = model_info[key]
    md.update(modelspec(plan, d0.resolution, started_at, trigger=_trigger_phrase(group)))
    return {k: str(v) for k, v in md.items() if v is not None}


def _datasets_info(group: DatasetGroup) -> list[dict[str, Any]]:
    out = []
    for d in group.datasets:
        buckets = {str(i): {"resolution": list(r), "count": len(v)} for i, (r, v) in enumerate(d.buckets().items())}
        out.append({
            "is_dreambooth": True,
            "batch_size_per_device": d.batch_size,
            "num_train_images": d.num_train_images,
            "num_reg_images": d.num_reg_images,
            "resolution": list(d.resolution),
            "enable_bucket": d.enable_bucket,
            "min_bucket_reso": d.min_bucket_reso,
            "max_bucket_reso": d.max_bucket_reso,
            "tag_frequency": d.tag_frequency,
            "bucket_info": {"buckets": buckets},
            "subsets": [
                {"img_count": s.img_count, "num_repeats": s.num_repeats, "color_aug": s.color_aug,
                 "flip_aug": s.flip_aug, "random_crop": s.random_crop, "shuffle_caption": s.shuffle_caption,
                 "keep_tokens": s.keep_tokens, "image_dir": s.image_dir.name, "class_tokens": s.class_tokens,
                 "is_reg": s.is_reg}
                for s in d.subsets
            ],
        })
    return out


def _trigger_phrase(group: DatasetGroup) -> str | None:
    tokens = []
    for d in group.datasets:
        for s in d.subsets:
            if s.class_tokens and not s.is_reg and s.class_tokens not in tokens:
                tokens.append(s.class_tokens)
    return ", ".join(tokens) or None


def modelspec(plan: TrainPlan, resolution: tuple[int, int], timestamp: float, trigger: str | None = None) -> dict[str, str]:
    """SAI model spec keys for an SD1.x LoRA."""
    md = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": ARCH_SD_V1_LORA,
        "modelspec.implementation": "diffusers",
        "modelspec.title": plan.output_name,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "epsilon",
        "modelspec.encoder_layer": str(plan.clip_skip),
        "modelspec.implementation_version": f"charframe/{__version__}",
    }
    if trigger:
        md["modelspec.trigger_phrase"] = trigger
    return md


def step_metadata(base: dict[str, str], steps: int, epoch: int) -> dict[str, str]:
    """`base` plus what changes per save: steps, epoch, finish time."""
    return {**base, "ss_steps": str(steps), "ss_epoch": str(epoch), "ss_training_finished_at": str(time.time())}
