"""One JAX round of ``experiments.benchmark`` (its worker process; prints one JSON line).

``python -m experiments.benchmark_jax --model=unet [--batch=4 --size=128 --width=0.5
--num_classes=21 --steps=5 --warmup=2]`` times the training loop's own jitted
``train_step`` (:func:`seg_jax.benchmarks.train_step.time_train_step`) with the config of
:func:`benchmark_config`: the model's defaults apart from ``width``, SGD with momentum 0.9
at lr 0.01 (constant), the semantic task's mean cross-entropy, like the PyTorch twin.
"""

import json

from absl import app, flags
import ml_collections

from experiments import cli, configs
from experiments.configs import shapes_base
from seg_jax.benchmarks import train_step

_MODEL = flags.DEFINE_string("model", "unet", "Model name (seg_jax.models).")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image side.")
_WIDTH = flags.DEFINE_float("width", 0.5, "Channel multiplier (U-Net 0.5 = 32 base features).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 21, "Output classes.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first compiles).")


def benchmark_config(model: str, *, batch: int, size: int,
                     width: float) -> ml_collections.ConfigDict:
  """A semantic training config for ``model`` as the benchmark times it."""
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": model, "width": width})
  config.optimizer.name = "momentum"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.schedule.name = "constant"
  config.schedule.warmup_steps = 0
  config.batch_size = batch
  config.data.image_size = size
  return config


def main(argv):
  configs.start_cli(argv)
  for name, flag in (("batch", _BATCH), ("size", _SIZE), ("num_classes", _NUM_CLASSES)):
    if flag.value < 1:
      cli.fail(f"--{name} must be >= 1, got {flag.value}")
  if _WIDTH.value <= 0:
    cli.fail(f"--width must be > 0, got {_WIDTH.value}")
  config = benchmark_config(_MODEL.value, batch=_BATCH.value, size=_SIZE.value,
                            width=_WIDTH.value)
  result = train_step.time_train_step(config, _NUM_CLASSES.value, steps=_STEPS.value,
                                      warmup=_WARMUP.value)
  print(json.dumps({"model": _MODEL.value, **result}), flush=True)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
