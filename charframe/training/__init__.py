"""Training: dataset TOML → LoRA, with the recipes of the original batch file (CONVENTIONS §6).

- `recipes`  logic names → `TrainPlan` (`make_plan`), the recipe table as data;
- `dataset`  the dataset TOML with sd-scripts' semantics (`load_dataset`);
- `images`, `text`  one sample's pixels and the caption's CLIP states;
- `network`  kohya LoRA / LyCORIS modules with sd-scripts' key names;
- `trainer`  the built-in loop (`train(plan)`), `state` its resumable state, `optim`, `metadata`;
- `kohya`    the same plan run by an sd-scripts checkout (`kohya_args`, `run_kohya`, `setup_kohya`);
- `paths`    dataset folders and the old batch file's names.
"""
