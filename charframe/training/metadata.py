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
from charframe.families.family import Family, get_family, of_base_model_version
from charframe.training.data import DatasetGroup, TrainingDataset
from charframe.training.plan import OptimizerRecipe, TrainPlan

MODELSPEC_VERSION = "1.0.1"
ARCH_SD_V1_LORA = "stable-diffusion-v1/lora"

#: sd-scripts options charframe never turns on, with the value sd-scripts records when they are off
#: (read off a file written by sd-scripts 48d368fa), so files from either engine show the same fields.
SD_SCRIPTS_OFF: dict[str, str] = {
    "ss_adaptive_noise_scale": "None",
    "ss_caption_dropout_every_n_epochs": "0",
    "ss_caption_dropout_rate": "0.0",
    "ss_caption_tag_dropout_rate": "0.0",
    "ss_face_crop_aug_range": "None",
    "ss_fp8_base": "False",
    "ss_fp8_base_unet": "False",
    "ss_huber_c": "0.1",
    "ss_huber_scale": "1.0",
    "ss_huber_schedule": "snr",
    "ss_ip_noise_gamma": "None",
    "ss_ip_noise_gamma_random_strength": "False",
    "ss_loss_type": "l2",
    "ss_lowram": "False",
    "ss_multires_noise_discount": "0.3",
    "ss_multires_noise_iterations": "None",
    "ss_network_dropout": "None",
    "ss_noise_offset_random_strength": "False",
    "ss_resize_interpolation": "None",
    "ss_scale_weight_norms": "None",
    # no validation split
    "ss_validation_split": "0.0",
    "ss_validation_seed": "None",
    "ss_validate_every_n_steps": "None",
    "ss_validate_every_n_epochs": "None",
    "ss_max_validation_steps": "None",
    "ss_num_validation_images": "0",
}


def optimizer_description(opt: OptimizerRecipe, optimizer_class: str) -> str:
    """`ss_optimizer` as sd-scripts writes it: the class path and its arguments."""
    args = ",".join(f"{k}={v}" for k, v in opt.args.items())
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
    net, opt, recipe = plan.network, plan.optimizer, plan.recipe
    family = of_base_model_version(str(model_info.get("base_model_version", ""))) or get_family()
    clip_skip = recipe.clip_skip if family.data.get("training", {}).get("conditioning", "clip") == "clip" else None
    v_pred = model_info.get("prediction_type") == "v_prediction"
    md: dict[str, Any] = {
        **SD_SCRIPTS_OFF,
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": plan.output_name,
        "ss_learning_rate": opt.learning_rate,
        "ss_text_encoder_lr": opt.text_encoder_lr,
        "ss_unet_lr": opt.learning_rate,
        "ss_num_train_images": group.num_train_images,
        "ss_num_reg_images": group.num_reg_images,
        "ss_num_batches_per_epoch": batches_per_epoch,
        "ss_num_epochs": num_epochs,
        "ss_gradient_checkpointing": plan.runtime.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing,
        "ss_gradient_accumulation_steps": 1,
        "ss_max_train_steps": recipe.steps,
        "ss_lr_warmup_steps": 0,
        "ss_lr_scheduler": opt.scheduler,
        "ss_network_module": net.module,
        "ss_network_dim": net.dim,
        "ss_network_alpha": float(net.alpha),  # sd-scripts' argparse type: "64.0"
        "ss_network_args": json.dumps(net.args) if net.args else None,
        "ss_mixed_precision": mixed_precision or plan.runtime.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": False,
        "ss_base_model_version": model_info.get("base_model_version", "sd_v1"),
        "ss_clip_skip": str(clip_skip),  # "None" where it does not apply (SDXL), as sd-scripts writes it
        "ss_min_snr_gamma": str(recipe.min_snr_gamma or None),
        "ss_debiased_estimation": recipe.debiased_estimation,
        "ss_zero_terminal_snr": bool(model_info.get("zero_terminal_snr", False)),
        "ss_max_token_length": str(recipe.max_token_length),  # "None" when off, as sd-scripts
        "ss_cache_latents": False,
        "ss_seed": recipe.seed,
        "ss_noise_offset": str(recipe.noise_offset or None),
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": opt.max_grad_norm,
        "ss_prior_loss_weight": recipe.prior_loss_weight,
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
    md.update(modelspec(plan.output_name, clip_skip, d0.resolution, started_at, trigger=_trigger_phrase(group),
                        family=family, v_prediction=v_pred))
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
            "bucket_info": {"buckets": buckets, "mean_img_ar_error": _mean_ar_error(d)} if d.enable_bucket else None,
            "resize_interpolation": None,
            "subsets": [
                {"img_count": s.img_count, "num_repeats": s.num_repeats, "color_aug": s.color_aug,
                 "flip_aug": s.flip_aug, "random_crop": s.random_crop, "shuffle_caption": s.shuffle_caption,
                 "keep_tokens": s.keep_tokens, "keep_tokens_separator": "", "secondary_separator": None,
                 "enable_wildcard": False, "caption_prefix": s.caption_prefix, "caption_suffix": s.caption_suffix,
                 "resize_interpolation": None, "image_dir": s.image_dir.name, "class_tokens": s.class_tokens,
                 "is_reg": s.is_reg}
                for s in d.subsets
            ],
        })
    return out


def _mean_ar_error(d: TrainingDataset) -> float:
    """Mean |bucket aspect − image aspect| over the images (repeats not counted), as sd-scripts logs it."""
    errors = [abs(img.bucket[0] / img.bucket[1] - img.size[0] / img.size[1]) for img in d.images]
    return sum(errors) / len(errors) if errors else 0.0


def _trigger_phrase(group: DatasetGroup) -> str | None:
    tokens = []
    for d in group.datasets:
        for s in d.subsets:
            if s.class_tokens and not s.is_reg and s.class_tokens not in tokens:
                tokens.append(s.class_tokens)
    return ", ".join(tokens) or None


def modelspec(title: str, clip_skip: int | None, resolution: tuple[int, int], timestamp: float,
              trigger: str | None = None, family: Family | None = None, v_prediction: bool = False) -> dict[str, str]:
    """SAI model spec keys for a LoRA `title` (its output name) of a family (SD1.x by default)."""
    arch = f"{family.modelspec_architecture}/lora" if family is not None else ARCH_SD_V1_LORA
    md = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": arch,
        "modelspec.implementation": "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        "modelspec.implementation_version": f"charframe/{__version__}",
    }
    if clip_skip is not None:  # sd-scripts leaves it out where there is no clip skip (SDXL)
        md["modelspec.encoder_layer"] = str(clip_skip)
    if trigger:
        md["modelspec.trigger_phrase"] = trigger
    return md


def step_metadata(base: dict[str, str], steps: int, epoch: int) -> dict[str, str]:
    """`base` plus what changes per save: steps, epoch, finish time."""
    return {**base, "ss_steps": str(steps), "ss_epoch": str(epoch), "ss_training_finished_at": str(time.time())}
