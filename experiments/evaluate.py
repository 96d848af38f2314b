"""Evaluate the latest checkpoint of a run: ``python -m experiments.evaluate --config=NAME
--workdir=DIR`` (same config flags as experiments.train; prints the scores table).

Reads only the parameters and BatchNorm statistics of the newest readable checkpoint (or
``--step``); errors are one line with exit code 2 (``--verbose`` for the traceback).
"""


from absl import app, flags
from ml_collections import config_flags

from experiments import cli, configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default /tmp/seg_jax/NAME).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.mark_flag_as_required("config")


def main(argv):
  configs.start_cli(argv)
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value or configs.default_workdir()
  loop.evaluate(_CONFIG.value, workdir, step=_STEP.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
