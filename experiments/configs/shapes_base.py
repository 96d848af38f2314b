"""Shared settings for models trained on the synthetic ``shapes`` dataset (64x64, 5 classes).

``arg`` is a comma-separated list of options: ``runlocal`` shrinks everything (tiny 32x32
split, a few steps, small batches) for smoke tests and debugging.
"""

import ml_collections

from seg_jax.data import default_data_config


def parse_arg(arg) -> set:
  return {a.strip() for a in (arg or "").split(",") if a.strip()}


def base_config(data_name: str = "shapes") -> ml_collections.ConfigDict:
  """Every field the loop reads, with defaults; experiment configs change a few."""
  config = ml_collections.ConfigDict()
  config.task = "semantic"
  config.model = ml_collections.ConfigDict({"name": "unet"})
  config.data = default_data_config(data_name)
  config.loss = ml_collections.ConfigDict(
      {"class_weights": ml_collections.FieldReference(None, field_type=list)})
  config.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 1e-3, "momentum": 0.9, "nesterov": False,
      "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "decay_all": False,
      "grad_clip_norm": 0.0, "lr_multipliers": {}})
  config.schedule = ml_collections.ConfigDict(
      {"name": "warmup_cosine", "warmup_steps": 50, "end_value": 0.0, "power": 0.9})
  config.batch_size = 16
  config.num_train_steps = 1000
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  config.num_overlays = 4
  config.seed = 0
  config.parallelism = "jit"
  config.dtype = "float32"
  # A weights file or another run's directory (see seg_jax.training.init_weights); with a
  # run, init_weights_scopes limits the copy to those top-level layers (default: every
  # layer whose path and shape match).
  config.init_weights = ml_collections.FieldReference(None, field_type=str)
  config.init_weights_scopes = ml_collections.FieldReference(None, field_type=tuple)
  config.distributed = ml_collections.ConfigDict({
      "coordinator_address": ml_collections.FieldReference(None, field_type=str),
      "num_processes": ml_collections.FieldReference(None, field_type=int),
      "process_id": ml_collections.FieldReference(None, field_type=int)})
  return config


def finish(config: ml_collections.ConfigDict, arg=None) -> ml_collections.ConfigDict:
  """Applies the options in ``arg`` (``runlocal``) to a complete config."""
  options = parse_arg(arg)
  unknown = options - {"runlocal"}
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)}; known: runlocal")
  if "runlocal" in options:
    apply_runlocal(config)
  return config


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


def get_config(arg=None) -> ml_collections.ConfigDict:
  """The base itself trains a small U-Net (see ``unet_shapes`` for the tuned recipe)."""
  config = base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "unet", "width": 0.25, "depth": 3})
  return finish(config, arg)
