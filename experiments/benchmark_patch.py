"""Patch classifier, naive patch-by-patch vs shared fully convolutional evaluation.

``python -m experiments.benchmark_patch [--sizes=64,128] [--patch_size=15] [--width=1.0]``
(see :mod:`seg_jax.benchmarks.patch`).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import patch

_SIZES = flags.DEFINE_list("sizes", ["64", "128"], "Square image sides.")
_PATCH_SIZE = flags.DEFINE_integer("patch_size", 15, "Patch side (odd).", lower_bound=1)
_WIDTH = flags.DEFINE_float("width", 1.0, "Channel multiplier.", lower_bound=1e-6)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2048, "Patches per batch.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed repeats (best).", lower_bound=1)
flags.register_validator("sizes", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--sizes must be comma-separated positive integers")


def main(argv):
  configs.start_cli(argv)
  patch.run([int(s) for s in _SIZES.value], patch_size=_PATCH_SIZE.value, width=_WIDTH.value,
            batch_size=_BATCH_SIZE.value, repeats=_REPEATS.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
