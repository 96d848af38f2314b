"""Inference time per image of experiment configs (the README's cost-beside-quality table).

``python -m experiments.benchmark_infer --configs=NAME[:ARG],... [--batch_size=8]
[--repeats=10] [--num_classes=5] [--image_size=0]`` (0: each config's own image size; N: every
model at N px) (see :mod:`seg_jax.benchmarks.infer_cost`).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import infer_cost

_CONFIGS = flags.DEFINE_list("configs", ["unet_shapes"], "Config names, each NAME or NAME:ARG.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls (median).", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 5, "Classes (shapes: 5).", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Time every model at this size (0: each "
                                   "config's data.image_size).", lower_bound=0)


def main(argv):
  configs.start_cli(argv)
  named = [(value, configs.load_config(value)) for value in _CONFIGS.value]
  infer_cost.run(named, _NUM_CLASSES.value, batch_size=_BATCH_SIZE.value,
                 repeats=_REPEATS.value, image_size=_IMAGE_SIZE.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
