"""FCN-8s (VGG-16 trunk at 1/8 width, random init) on shapes: the skip architecture on toy data.

FCN pads the first convolution by 100 px as in the reference, so even 64 px inputs work."""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "fcn8s", "width": 0.125, "dropout_rate": 0.0})
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  # Measured (README): mean IU 0.289 / 0.357 after 750 / 1500 steps (0.234 after 800 with
  # scale jitter). The 100 px first-layer padding makes each 64 px step cost a 262 px one.
  config.data.augmentation.scale_range = (1.0, 1.0)
  config.batch_size = 8
  config.num_train_steps = 1500
  config.eval_every = 750
  config.checkpoint_every = 750
  return shapes_base.finish(config, arg)
