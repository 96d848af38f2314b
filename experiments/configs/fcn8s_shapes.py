"""FCN-8s (VGG-16 trunk at 1/8 width, random init) on shapes: the skip architecture on toy data.

FCN pads the first convolution by 100 px as in the reference, so even 64 px inputs work."""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "fcn8s", "width": 0.125, "dropout_rate": 0.0})
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.num_train_steps = 1500
  return shapes_base.finish(config, arg)
