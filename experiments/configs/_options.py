"""The ``arg`` options every experiment config shares (not a config itself: the leading
underscore keeps it out of ``--config=NAME``).

Every config starts from ``seg_jax.training.config.base_config(data_name, task)``, which
defines every field the training code reads at its library default (directly, or through a
dataset base such as ``shapes_base``) and sets what it changes; nothing is defaulted in code.
``arg`` options: :func:`parse_arg` splits ``--config=NAME:a,b``; :func:`finish` applies
``runlocal`` (tiny data, a few steps: a smoke test that runs in seconds).
"""

import os

import ml_collections

# experiments.train's default workdir parent: a run of config NAME goes to RUNS_DIR/NAME
# (NAME_runlocal etc. for option variants), which is where staged recipes look for it.
RUNS_DIR = "/tmp/seg_jax"


def run_dir(name: str, runlocal: bool = False) -> str:
  """The default workdir of the run called ``name`` (a config name plus any suffix), or of
  its ``runlocal`` variant (``NAME_runlocal``), where a staged recipe's smoke test looks."""
  return os.path.join(RUNS_DIR, name + ("_runlocal" if runlocal else ""))


def parse_arg(arg) -> set:
  return {a.strip() for a in (arg or "").split(",") if a.strip()}


def apply_runlocal(config: ml_collections.ConfigDict) -> None:
  """Tiny data, few steps: runs end to end in seconds."""
  if config.data.name == "shapes":
    config.data.builder_config = "tiny"
    config.data.image_size = 32
  config.data.shuffle_buffer = 16
  config.batch_size = 4
  config.num_train_steps = 4
  config.log_every = 2
  config.eval_every = 0
  config.checkpoint_every = 4
  config.schedule.warmup_steps = 1
  config.num_overlays = 2
  if "width" in config.model:
    config.model.width = min(config.model.width, 0.125)


def finish(config: ml_collections.ConfigDict, arg=None) -> ml_collections.ConfigDict:
  """Applies the options in ``arg`` (``runlocal``) to a complete config."""
  options = parse_arg(arg)
  unknown = options - {"runlocal"}
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)}; known: runlocal")
  if "runlocal" in options:
    apply_runlocal(config)
  return config
