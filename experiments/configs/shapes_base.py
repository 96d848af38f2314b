"""Shared settings for models trained on the synthetic ``shapes`` dataset (64x64, 5 classes).

``base_config`` is ``seg_jax.training.config.base_config`` (every field, at its library
default) with what the shapes recipes share: Adam at 1e-3 with 50 warmup steps and cosine
decay, 1000 steps of batch 16, evaluation and a checkpoint every 500 steps, the last 2 kept.
``arg`` is a comma-separated list of options: ``runlocal`` shrinks everything (tiny 32x32
split, a few steps, small batches) for smoke tests and debugging.
"""

import ml_collections

# The shared option helpers, also used through this module by the configs built on it.
from experiments.configs._options import apply_runlocal, finish, parse_arg, run_dir  # noqa: F401
from seg_jax.training import config as config_lib


def base_config(data_name: str = "shapes", task: str = "semantic") -> ml_collections.ConfigDict:
  """Every field the loop reads; the shapes recipes' shared values where they differ from
  the library defaults."""
  config = config_lib.base_config(data_name, task)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9  # used if an override switches to SGD
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 50
  config.batch_size = 16
  config.num_train_steps = 1000
  config.eval_every = 500
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  return config


def start_from_bn_classifier(config: ml_collections.ConfigDict, runlocal: bool) -> None:
  """The ``:pretrained`` option of SegNet/DeconvNet: the encoder starts from the
  ``vgg16_bn_shapes_cls`` run (at its width, 1/8, so every trunk layer matches; the
  classifier's other layers are reported as unused); ``--config.init_weights=''`` is the
  same recipe from scratch (the ablation)."""
  config.model.width = 0.125
  config.init_weights = run_dir("vgg16_bn_shapes_cls", runlocal)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """The base itself trains a small U-Net (see ``unet_shapes`` for the tuned recipe)."""
  config = base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "unet", "width": 0.25, "depth": 3})
  return finish(config, arg)
