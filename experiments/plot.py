"""Training curves of a run: ``python -m experiments.plot --workdir=DIR [--output=FILE]``.

Reads ``DIR/metrics.jsonl`` and draws training loss and the evaluation scores it contains
(mean IU, pixel accuracy, box/mask AP) against the step into ``DIR/curves.png``. Errors: one line, exit code 2 (experiments/cli.py).
"""

import json
import os

from absl import app, flags

from experiments import cli, configs
from seg_jax import charts

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with metrics.jsonl.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write (default WORKDIR/curves.png).")
flags.mark_flag_as_required("workdir")


def read_records(path: str) -> list[dict]:
  """The JSON lines of ``path``; a truncated last line (a run killed mid-write) is skipped."""
  records = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        if line.endswith("\n"):  # not just the unfinished last line: the file is damaged
          raise ValueError(f"{path}:{number} is not a JSON line") from None
  return records


def main(argv):
  configs.start_cli(argv)
  path = os.path.join(_WORKDIR.value, "metrics.jsonl")
  output = _OUTPUT.value or os.path.join(_WORKDIR.value, "curves.png")
  if not os.path.exists(path):
    cli.fail(f"no metrics.jsonl in {_WORKDIR.value} (train a run there first)")
  panels = charts.plot_metrics(read_records(path), output,
                               title=os.path.basename(os.path.abspath(_WORKDIR.value)))
  print(f"wrote {output} ({', '.join(panels)})")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
