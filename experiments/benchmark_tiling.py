"""Peak memory of overlap-tile inference at growing image sizes.

``python -m experiments.benchmark_tiling [--sizes=1000,4000] [--tile=256] [--margin=32]``
(see :mod:`seg_jax.benchmarks.tiling`; each size runs in a fresh interpreter).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import tiling

_SIZES = flags.DEFINE_list("sizes", ["1000", "4000"], "Square image sides.")
_TILE = flags.DEFINE_integer("tile", 256, "Tile side.", lower_bound=1)
_MARGIN = flags.DEFINE_integer("margin", 32, "Context margin around each tile.", lower_bound=0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Tiles per batch.", lower_bound=1)
_WIDTH = flags.DEFINE_float("width", 0.125, "U-Net channel multiplier.", lower_bound=1e-6)
_DEPTH = flags.DEFINE_integer("depth", 3, "U-Net depth.", lower_bound=1)
_ARGMAX = flags.DEFINE_bool("argmax", False, "Return class indices instead of logits.")
flags.register_validator("sizes", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--sizes must be comma-separated positive integers")


def main(argv):
  configs.start_cli(argv)
  tiling.run([int(s) for s in _SIZES.value], tile=_TILE.value, margin=_MARGIN.value,
             batch_size=_BATCH_SIZE.value, width=_WIDTH.value, depth=_DEPTH.value,
             argmax=_ARGMAX.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
