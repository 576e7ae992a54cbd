"""Training: dataset TOML → LoRA, with the recipes of the original batch file (CONVENTIONS §6).

- `plan`      logic names → a `TrainPlan` of small records (`make_plan`), the recipe table as data;
- `data`      the dataset TOML (records of `charframe.dataset.schema`) with sd-scripts' semantics (`load_dataset`);
- `images`, `text`, `imagecheck`  one sample's pixels, the caption's CLIP states, the start-up decode check;
- `adapters`  kohya LoRA / LyCORIS modules with sd-scripts' key names;
- `setup`     everything before step 1 (`begin_run`, `build_session`); `loop` the steps and their callbacks;
  `loss` one batch's loss; `outputs` output locations and the final save; `state` the resumable state;
  `checkpoints` the step checkpoints' names (`-step00000500`);
  `optim`, `metadata`, `distributed`, `result`;
- `engines`   the `Engine` protocol and `train_with`; `engines.builtin` (`train(plan)`), `engines.kohya`
  (the same plan run by an sd-scripts checkout);
- `paths`     dataset folders and the old batch file's names.
"""
