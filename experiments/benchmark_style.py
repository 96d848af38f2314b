"""Gatys style transfer speed, optimiser iterations/s (and PyTorch's when torch imports).

``python -m experiments.benchmark_style [--sizes=256,512] [--optimizers=lbfgs,adam]``
(see :mod:`seg_jax.benchmarks.style`).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import style

_SIZES = flags.DEFINE_list("sizes", ["256", "512"], "Square image sides.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", ["lbfgs", "adam"], "lbfgs and/or adam.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per case.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (incl. compile).",
                               lower_bound=0)
_DEPTH = flags.DEFINE_enum("depth", "19", ["16", "19"], "VGG depth.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time PyTorch when torch imports.")
flags.register_validator("sizes", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--sizes must be comma-separated positive integers")
flags.register_validator("optimizers", lambda v: bool(v) and set(v) <= {"lbfgs", "adam"},
                         "--optimizers must be lbfgs and/or adam")


def main(argv):
  configs.start_cli(argv)
  style.run([int(s) for s in _SIZES.value], _OPTIMIZERS.value, steps=_STEPS.value,
            warmup=_WARMUP.value, depth=int(_DEPTH.value), with_torch=_TORCH.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
