"""Evaluate the latest checkpoint of a run: ``python -m experiments.evaluate --config=NAME
--workdir=DIR`` (same config flags as experiments.train; prints the scores table)."""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default /tmp/seg_jax/NAME).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.mark_flag_as_required("config")


def main(argv):
  if not flags.FLAGS["verbosity"].present:  # orbax and TFDS are chatty at INFO
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value or os.path.join(
      "/tmp/seg_jax", configs.config_name(flags.FLAGS["config"].config_filename))
  loop.evaluate(_CONFIG.value, workdir, step=_STEP.value)


if __name__ == "__main__":
  app.run(main, flags_parser=configs.parse_flags_or_exit)
