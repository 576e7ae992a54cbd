"""Step checkpoints (issue 22): `save_every_n_steps` writes sd-scripts' `-step00000002` files with the weights of
that step and a resumable state; a run stopped after a checkpoint resumes and keeps it; bad values are one line."""

from pathlib import Path

import pytest
import torch

from charframe.errors import CharframeError
from charframe.lora.io import load_lora_file
from charframe.models.tiny import build_tiny_sd
from charframe.training.engines.builtin import train
from charframe.training.engines.kohya import kohya_args
from charframe.training.outputs import checkpoint_path, checkpoints, find_state
from charframe.training.plan import make_plan
from charframe.training.result import TrainingInterrupted
from train_data import charframe_dataset, one_thread  # noqa: F401 (autouse fixture)


def _plan(root: Path, steps: int, **kw):
    toml = charframe_dataset(root, n=2, repeats=1, batch=1)
    return make_plan("Lora1x1A1-AdamW8", 2, 20000, steps, dataset=toml, out="krnk", output_dir=str(root / "LoRAOutput"),
                     logging_dir=str(root / "LoRALog"), **kw)


def test_checkpoints_every_n_steps_hold_that_steps_weights(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 5, save_every_n_steps=2)
    result = train(plan, components=build_tiny_sd())
    out = Path(result.output)
    assert [(s, p.name) for s, p in checkpoints(out)] == [
        (2, "krnk-Lora1x1A1-AdamW8-2-20000-5-step00000002.safetensors"),
        (4, "krnk-Lora1x1A1-AdamW8-2-20000-5-step00000004.safetensors")]
    final, meta = load_lora_file(out)
    two, meta2 = load_lora_file(checkpoint_path(out, 2))
    four, meta4 = load_lora_file(checkpoint_path(out, 4))
    assert meta2["ss_steps"] == "2" and meta4["ss_steps"] == "4" and meta["ss_steps"] == "5"
    assert set(two) == set(final) and any(not torch.equal(two[k], four[k]) for k in two)
    assert any(not torch.equal(four[k], final[k]) for k in four)
    assert find_state(plan.io, plan.output_name) is None  # finished: nothing left to resume


def test_a_run_stopped_after_a_checkpoint_resumes_from_it(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 5, save_every_n_steps=2)

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(plan, components=build_tiny_sd(), on_step=stop_at_3)
    out = Path(plan.io.output_dir) / "krnk" / f"{plan.output_name}.safetensors"
    assert [s for s, _ in checkpoints(out)] == [2]
    kept = checkpoint_path(out, 2).stat().st_mtime_ns
    result = train(plan, components=build_tiny_sd(), resume=True)
    assert [s for s, _ in checkpoints(Path(result.output))] == [2, 4]
    assert checkpoint_path(out, 2).stat().st_mtime_ns == kept  # not made again


def test_stale_checkpoints_are_never_overwritten(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 3, save_every_n_steps=1)
    out = Path(plan.io.output_dir) / "krnk" / f"{plan.output_name}.safetensors"
    out.parent.mkdir(parents=True)
    checkpoint_path(out, 1).write_bytes(b"an earlier run's checkpoint")
    result = train(plan, components=build_tiny_sd())
    assert Path(result.output).name == f"{plan.output_name}-1.safetensors"
    assert checkpoint_path(out, 1).read_bytes() == b"an earlier run's checkpoint"


@pytest.mark.parametrize("every", [0, 7, -1])
def test_save_every_outside_1_to_steps_is_one_line(tmp_path: Path, every: int) -> None:
    with pytest.raises(CharframeError, match=rf"save_every must be a number of steps from 1 to the 6 steps of the run "
                                             rf"\(a checkpoint every N steps\), got {every}") as e:
        _plan(tmp_path, 6, save_every_n_steps=every)
    assert e.value.param == "save_every"


def test_kohya_saves_the_same_checkpoints(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 6, save_every_n_steps=2, model=str(tmp_path / "m.safetensors"))
    args = kohya_args(plan)
    assert "--save_every_n_steps=2" in args and "--save_state" in args
    assert not any(a.startswith("--save_every_n_steps") for a in kohya_args(_plan(tmp_path / "b", 6, model="m")))
