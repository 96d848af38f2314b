"""Train (and evaluate) a model: ``python -m experiments.train --config=unet_shapes``.

``--config`` takes a config NAME from experiments/configs (``NAME:runlocal`` for a smoke run)
or a path; ``--config.a.b=value`` overrides fields; ``--workdir`` defaults to
/tmp/seg_jax/<config name>. Re-running with the same workdir resumes from its checkpoint.

Exit codes (experiments/cli.py): 0 done, 2 error (one line; ``--verbose`` for the
traceback), 75 preempted by SIGTERM after saving a checkpoint (run it again to resume).
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import cli, configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default /tmp/seg_jax/NAME).")
flags.mark_flag_as_required("config")


def main(argv):
  configs.start_cli(argv)
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value or configs.default_workdir()
  result = loop.train_and_evaluate(_CONFIG.value, workdir)
  if "preempted_at_step" in result:
    raise cli.Preempted(result["preempted_at_step"])


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
