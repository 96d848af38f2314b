"""Forward, input-gradient and kernel-gradient time of each U-Net 3x3 convolution.

``python -m experiments.benchmark_convs [--batch=4] [--size=128] [--width=0.5] [--steps=5]``
(see :func:`seg_jax.benchmarks.train_step.conv_profile`).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import train_step

_BATCH = flags.DEFINE_integer("batch", 4, "Images per call.", lower_bound=1)
_SIZE = flags.DEFINE_integer("size", 128, "Square input side.", lower_bound=16)
_WIDTH = flags.DEFINE_float("width", 0.5, "Channel multiplier (0.5 = 32 base features).",
                            lower_bound=1e-6)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls (median) after 2 warm-up.",
                              lower_bound=1)


def main(argv):
  configs.start_cli(argv)
  rows = train_step.conv_profile(batch=_BATCH.value, size=_SIZE.value,
                                 base=max(1, round(64 * _WIDTH.value)), steps=_STEPS.value)
  print(train_step.conv_profile_table(rows, train_step.matmul_peak_gflops()), flush=True)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
