"""The full-resolution FCN baseline on shapes: no downsampling, so a small receptive field
and every layer at 64x64 (slow per step)."""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict(
      {"name": "full_res_fcn", "features": 32, "num_layers": 6, "dilation": 1})
  config.optimizer.learning_rate = 3e-3
  return shapes_base.finish(config, arg)
