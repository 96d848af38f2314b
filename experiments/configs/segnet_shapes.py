"""SegNet (max-unpooling decoder) on shapes, 4 encoder stages at 1/8 width."""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "segnet", "width": 0.125, "num_stages": 4})
  config.optimizer.learning_rate = 3e-3
  return shapes_base.finish(config, arg)
