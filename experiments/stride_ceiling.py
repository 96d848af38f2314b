"""How much a score map at output stride s can outline on ``shapes``: the FCN ceiling.

``python -m experiments.stride_ceiling [--builder_configs=64,128] [--strides=32,16,8,4]``
renders each ``shapes`` variant's validation labels (exactly the dataset's examples) and
prints the mean IU of the stride-s oracle (see :mod:`seg_jax.benchmarks.stride_ceiling`).
"""

import numpy as np
from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import stride_ceiling

_BUILDER_CONFIGS = flags.DEFINE_list("builder_configs", ["64", "128"],
                                     "shapes builder configs whose validation labels to use.")
_STRIDES = flags.DEFINE_list("strides", ["32", "16", "8", "4"], "Output strides.")
flags.register_validator("strides", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--strides must be comma-separated positive integers")


def validation_labels(builder_config: str) -> np.ndarray:
  from seg_jax.data import shapes  # local: imports TFDS
  known = shapes.Shapes.builder_configs  # TFDS: name -> ShapesConfig
  if builder_config not in known:
    raise ValueError(f"unknown shapes builder config {builder_config!r}; known: "
                     f"{', '.join(known)}")
  cfg = known[builder_config]
  return np.stack([cfg.render(i, "validation")["segmentation"]
                   for i in range(cfg.num_validation)])


def main(argv):
  configs.start_cli(argv)
  from seg_jax.data import shapes
  label_sets = {f"shapes/{name} validation": validation_labels(name)
                for name in _BUILDER_CONFIGS.value}
  stride_ceiling.run(label_sets, len(shapes.SHAPE_NAMES) + 1,
                     [int(s) for s in _STRIDES.value], ("background",) + shapes.SHAPE_NAMES)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
