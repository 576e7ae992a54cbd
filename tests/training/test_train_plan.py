"""Recipes (CONVENTIONS §6): all 16 logic names, their numbers, and the TrainPlan TOML round trip."""

from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.training.plan import TrainPlan, all_logics, make_plan, parse_logic

# The §6 table written out by hand: network → (module, algo, conv), alpha rule, optimizer.
NETWORKS = {
    "Lora1x1": ("networks.lora", None, False),
    "Lora3x3": ("networks.lora", None, True),
    "Locon": ("lycoris.kohya", "lora", True),
    "Loha": ("lycoris.kohya", "loha", True),
}


def test_all_16_logics_are_known() -> None:
    logics = all_logics()
    assert len(logics) == 16 and len(set(logics)) == 16
    assert "Lora3x3A50p-AdamW8" in logics and "LohaA1-AdaFactor" in logics


@pytest.mark.parametrize("logic", all_logics())
@pytest.mark.parametrize("dim,lr", [(128, 100), (32, 77), (5, 3)])
def test_recipe_numbers(logic: str, dim: int, lr: int) -> None:
    plan = make_plan(logic, dim, lr, 1000, dataset="d.toml", out="krnk")
    parts = parse_logic(logic)
    module, algo, conv = NETWORKS[parts.network]
    alpha = 1 if parts.alpha == "A1" else dim // 2
    assert (plan.network.module, plan.network.algo) == (module, algo)
    assert plan.network.alpha == alpha
    assert (plan.network.conv_dim, plan.network.conv_alpha) == ((dim, alpha) if conv else (None, None))
    assert plan.recipe.seed == 31337 and plan.runtime.mixed_precision == "fp16" and plan.io.save_precision == "fp16"
    assert plan.runtime.gradient_checkpointing and plan.runtime.attention == "sdpa"
    if parts.optimizer == "AdamW8":
        assert plan.optimizer.type == "AdamW8bit" and plan.optimizer.scheduler == "cosine_with_restarts"
        assert plan.optimizer.scheduler_cycles == 1
        assert plan.optimizer.learning_rate == pytest.approx(lr * 1e-6, rel=1e-12)
        assert plan.optimizer.text_encoder_lr_count == (lr * 44) // 100
        assert plan.optimizer.text_encoder_lr == pytest.approx(((lr * 44) // 100) * 1e-6, rel=1e-12)
    else:
        assert plan.optimizer.type == "AdaFactor" and plan.optimizer.learning_rate is None and plan.optimizer.text_encoder_lr is None
        assert plan.optimizer.args == {"relative_step": True, "scale_parameter": True, "warmup_init": False}
    assert plan.output_name == f"krnk-{logic}-{dim}-{lr}-1000"


def test_seed_example_numbers() -> None:
    plan = make_plan("Lora3x3A50p-AdamW8", 128, 100, 1200, dataset="d.toml", out="krnk")
    assert plan.network.args == {"conv_dim": "128", "conv_alpha": "64"}
    assert (plan.optimizer.learning_rate, plan.optimizer.text_encoder_lr) == (100e-6, 44e-6)
    assert plan.output_name == "krnk-Lora3x3A50p-AdamW8-128-100-1200"


def test_old_spelling_and_letter_case() -> None:
    plan = make_plan("LohaA50p-AdaFacotor", 32, 100, 1000, dataset="d.toml", out="k")
    assert plan.optimizer.type == "AdaFactor"
    assert plan.logic == "LohaA50p-AdaFacotor"  # file names keep the old batch file's spelling
    assert make_plan("lora3x3a1-adamw8", 8, 1, 1, dataset="d", out="k").logic == "Lora3x3A1-AdamW8"


@pytest.mark.parametrize("bad", ["Lora3x3A50-AdamW8", "LoraA1-AdamW8", "Lora3x3A1-Adam", "Lora3x3A1AdamW8"])
def test_unknown_logic_is_explained(bad: str) -> None:
    with pytest.raises(CharframeError, match=r"unknown logic .*\(Lora1x1\|Lora3x3\|Locon\|Loha\)"):
        make_plan(bad, 8, 1, 1, dataset="d", out="k")


def test_bad_numbers_and_names() -> None:
    with pytest.raises(CharframeError, match="dim must be"):
        make_plan("Lora1x1A1-AdamW8", 0, 1, 1, dataset="d", out="k")
    with pytest.raises(CharframeError, match="plain name"):
        make_plan("Lora1x1A1-AdamW8", 8, 1, 1, dataset="d", out="a/b")


def test_plan_round_trips_through_toml(tmp_path: Path) -> None:
    plan = make_plan("LoconA50p-AdamW8", 16, 100, 10, dataset=tmp_path / "d.toml", out="k", vae=None,
                     sample_prompts=["krnk, smile"], max_token_length=150, noise_offset=0.05)
    path = plan.save(tmp_path / "p.train.toml")
    again = TrainPlan.load(path)
    assert again == plan
    assert "vae" not in path.read_text()  # None is omitted, restored as the default


def test_user_recipes_file(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "charframe" / "data" / "recipes.toml").read_text()
    custom = tmp_path / "recipes.toml"
    custom.write_text(text.replace("text_encoder_lr_percent = 44", "text_encoder_lr_percent = 50"))
    from charframe.training.plan import load_recipes

    plan = make_plan("Lora1x1A1-AdamW8", 8, 100, 1, dataset="d", out="k", recipes=load_recipes(custom))
    assert plan.optimizer.text_encoder_lr_count == 50
