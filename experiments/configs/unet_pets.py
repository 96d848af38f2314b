"""U-Net on Oxford-IIIT Pet (background / pet; the trimap border is ignored), 128 px.

The dataset must be prepared with TFDS first (``tfds build oxford_iiit_pet``; see the data
README); ``runlocal`` shrinks everything.
"""

import ml_collections

from experiments.configs import _options
from seg_jax.training.config import base_config


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = base_config("oxford_iiit_pet")
  config.model = ml_collections.ConfigDict(
      {"name": "unet", "width": 0.5, "depth": 4, "padding": "same", "upsampling": "transposed"})
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 200
  config.batch_size = 16
  config.num_train_steps = 10_000
  config.log_every = 100
  config.eval_every = 2000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 2
  config = _options.finish(config, arg)
  if "runlocal" in _options.parse_arg(arg):
    config.data.image_size = 64
  return config
