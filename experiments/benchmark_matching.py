"""In-graph Hungarian matching vs the scipy host matcher.

``python -m experiments.benchmark_matching [--queries=100] [--targets=10,50] [--batch=8]``
(see :mod:`seg_jax.benchmarks.matching`).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import matching

_QUERIES = flags.DEFINE_integer("queries", 100, "Queries (cost matrix rows).", lower_bound=1)
_TARGETS = flags.DEFINE_list("targets", ["10", "50"], "Target counts (columns), one row each.")
_BATCH = flags.DEFINE_integer("batch", 8, "Cost matrices per batch.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed repeats (median).", lower_bound=1)
flags.register_validator("targets", lambda v: all(s.isdigit() and int(s) > 0 for s in v),
                         "--targets must be comma-separated positive integers")


def main(argv):
  configs.start_cli(argv)
  matching.run(_QUERIES.value, [int(s) for s in _TARGETS.value], _BATCH.value, _REPEATS.value)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
