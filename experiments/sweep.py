"""Grid sweeps: ``python -m experiments.sweep --config=encdec_shapes
--sweep=model.upsampling=nearest,bed_of_nails,max_unpool,transposed,bilinear``.

Each ``--sweep=KEY=V1,V2,...`` is one axis; several axes make a grid. Variants run one after
another through ``train_and_evaluate`` in ``WORKDIR/<variant>`` (re-running resumes them), or
``--print_commands`` prints one ``experiments.train`` command per variant for a cluster.
Final scores go to ``WORKDIR/results.csv``, ``results.md`` and a mean-IU bar chart
``results.png`` (matplotlib, the style of ``seg_jax.charts``).
"""

from __future__ import annotations

import csv
import itertools
import os
import shlex
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from experiments import cli, configs
from seg_jax import charts

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path.",
                                          lock_config=True)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,... (repeat for a grid).")
_WORKDIR = flags.DEFINE_string("workdir", None,
                                "Sweep directory (default /tmp/seg_jax/sweep_NAME).")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print the train commands and exit.")
flags.mark_flag_as_required("config")

SCORE_COLUMNS = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")


def parse_axes(specs: list[str]) -> list[tuple[str, list[str]]]:
  """``['model.upsampling=a,b']`` -> ``[('model.upsampling', ['a', 'b'])]``."""
  axes = []
  for spec in specs:
    key, sep, values = spec.partition("=")
    values = [v for v in values.split(",") if v]
    if not sep or not key or not values:
      raise ValueError(f"--sweep must look like KEY=V1,V2,...; got {spec!r}")
    axes.append((key.strip(), values))
  return axes


def expand_grid(axes: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
  keys = [key for key, _ in axes]
  return [dict(zip(keys, combo)) for combo in itertools.product(*[v for _, v in axes])]


def variant_name(assignment: dict[str, str]) -> str:
  return ",".join(f"{key.split('.')[-1]}={value}" for key, value in assignment.items()) or "base"


def apply_assignment(config, assignment: dict[str, str]):
  """A copy of ``config`` with ``{KEY: value}`` set as ``--config.KEY=value`` would set it."""
  return configs.apply_overrides(config, [f"{key}={value}" for key, value in assignment.items()])


def train_commands(config_arg: str, overrides: list[str], workdir: str,
                   assignments: list[dict[str, str]]) -> list[str]:
  commands = []
  for assignment in assignments:
    args = [sys.executable, "-m", "experiments.train", f"--config={config_arg}",
            f"--workdir={os.path.join(workdir, variant_name(assignment))}", *overrides]
    args += [f"--config.{key}={value}" for key, value in assignment.items()]
    commands.append(" ".join(shlex.quote(a) for a in args))
  return commands


def run_sweep(config, assignments: list[dict[str, str]], workdir: str) -> list[dict]:
  """Trains every variant in turn; returns one result row per variant."""
  # Imported here so that flag and --sweep errors are reported before jax/TF load (slow).
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  rows = []
  for assignment in assignments:
    name = variant_name(assignment)
    start = time.time()
    scores = loop.train_and_evaluate(apply_assignment(config, assignment),
                                     os.path.join(workdir, name))
    if "preempted_at_step" in scores:  # stop the sweep; re-running resumes this variant
      raise cli.Preempted(scores["preempted_at_step"])
    row = {"variant": name, **assignment}
    row.update({column: scores.get(column, float("nan")) for column in SCORE_COLUMNS})
    row["seconds"] = round(time.time() - start, 1)
    rows.append(row)
    write_results(rows, workdir)
  return rows


def write_results(rows: list[dict], workdir: str) -> None:
  """``results.csv``, ``results.md`` and ``results.png`` in ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  columns = list(rows[0])
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)

  def cell(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)

  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  charts.bar_chart([row["variant"] for row in rows], [float(row["mean_iou"]) for row in rows],
                   os.path.join(workdir, "results.png"), title="mean IU")


def main(argv):
  configs.start_cli(argv)
  config_arg = flags.FLAGS["config"].config_filename
  workdir = _WORKDIR.value or configs.default_workdir("sweep_")
  assignments = expand_grid(parse_axes(_SWEEP.value))
  try:
    for assignment in assignments:  # fail fast on a typo, before anything trains
      apply_assignment(_CONFIG.value, assignment)
  except ValueError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  if _PRINT.value:
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")]
    print("\n".join(train_commands(given[0] if given else config_arg, overrides, workdir,
                                    assignments)))
    return
  rows = run_sweep(_CONFIG.value, assignments, workdir)
  print(open(os.path.join(workdir, "results.md")).read())
  print(f"results in {workdir}/results.csv, results.md, results.png ({len(rows)} variants)")


def _parse(argv):
  argv = configs.parse_flags_or_exit(argv)
  try:
    parse_axes(_SWEEP.value)
  except ValueError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  return argv


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=_parse)
