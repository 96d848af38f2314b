"""JAX vs PyTorch train-step comparison in separate processes, in alternating rounds.

Each round runs one worker process (a command given by the caller, e.g.
``python -m experiments.benchmark_jax`` / ``python -m experiments.benchmark_torch``) that
times the step and prints one JSON object as the last line of its stdout. Per model the
rounds alternate ``jax, torch, jax, torch, ...`` so a load change on the machine hits both
sides, and neither framework shares its process (threads, allocator, caches) with the
other. Before and after every round the 1-minute load average is printed; before a round
whose load is at least ``quiet_load`` a line ``WARNING: machine not quiet ...`` is printed.
A round keeps one core busy for its duration, which alone lifts the 1-minute load by up to
~0.6 for the next one: with ``settle_seconds`` each round first waits (up to that long) for
the load to fall below ``quiet_load``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from typing import Callable, Optional, Sequence

QUIET_LOAD = 0.5


class WorkerError(ChildProcessError):
  """A worker process failed or printed no JSON result (an OSError: CLIs print one line)."""


def load_average() -> Optional[float]:
  try:
    return os.getloadavg()[0]
  except OSError:
    return None


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def worker_flags(model: str, **settings) -> list[str]:
  """``--model=unet --batch=4 ...`` for a worker command line."""
  return [f"--model={model}"] + [f"--{key}={value}" for key, value in settings.items()]


def run_worker(command: Sequence[str], args: Sequence[str], cwd: Optional[str] = None) -> dict:
  """Runs ``command + args``; returns the JSON object on the last line of its stdout."""
  done = subprocess.run(list(command) + list(args), capture_output=True, text=True, cwd=cwd,
                        check=False)
  lines = [line for line in done.stdout.splitlines() if line.strip()]
  if done.returncode != 0 or not lines:
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    reason = errors[-1] if errors else f"no output (exit code {done.returncode})"
    raise WorkerError(f"{' '.join(command)} failed (exit code {done.returncode}): {reason}")
  try:
    result = json.loads(lines[-1])
  except json.JSONDecodeError as error:
    raise WorkerError(f"{' '.join(command)}: last output line is not JSON: "
                      f"{lines[-1][:200]!r}") from error
  if not isinstance(result, dict) or "step_s" not in result:
    raise WorkerError(f"{' '.join(command)}: result has no step_s: {lines[-1][:200]!r}")
  return result


def wait_for_quiet(quiet_load: float, max_seconds: float, poll_seconds: float = 5.0,
                   sleep: Callable[[float], None] = time.sleep) -> Optional[float]:
  """Polls the 1-minute load until it is below ``quiet_load`` or ``max_seconds`` passed."""
  waited, load = 0.0, load_average()
  while load is not None and load >= quiet_load and waited < max_seconds:
    sleep(poll_seconds)
    waited += poll_seconds
    load = load_average()
  return load


def compare(models: Sequence[str], *, rounds: int, jax_command: Sequence[str],
            torch_command: Optional[Sequence[str]], settings: dict,
            quiet_load: float = QUIET_LOAD, settle_seconds: float = 0.0,
            cwd: Optional[str] = None, out: Callable[[str], None] = print) -> list[dict]:
  """Alternating rounds per model; returns one summary row per model (see :func:`table`).

  ``settings`` are passed to both workers as ``--key=value`` flags (batch, size, width,
  num_classes, steps, ...). Without ``torch_command`` only JAX rounds run. A failing torch
  worker ends that model's torch rounds (its error is kept in the row); a failing JAX
  worker raises :class:`WorkerError`.
  """
  if rounds < 2:
    raise ValueError(f"rounds must be >= 2 (alternating JAX and PyTorch), got {rounds}")
  sides = [("jax", jax_command)] + ([("torch", torch_command)] if torch_command else [])
  rows = []
  for model in models:
    results = {side: [] for side, _ in sides}
    loads, torch_error = [], None
    for index in range(1, rounds + 1):
      for side, command in sides:
        if side == "torch" and torch_error:
          continue
        before = wait_for_quiet(quiet_load, settle_seconds) if settle_seconds else load_average()
        tag = f"round {index}/{rounds} {side:5s} {model}"
        if before is not None and before >= quiet_load:
          out(f"WARNING: machine not quiet: 1-minute load {before:.2f} >= {quiet_load} before "
              f"{tag}; figures are not comparable")
        out(f"{tag}: load before {_fmt(before, '.2f')}")
        try:
          result = run_worker(command, worker_flags(model, **settings), cwd=cwd)
        except WorkerError as error:
          if side == "jax":
            raise
          torch_error = str(error)
          out(f"{tag}: error: {torch_error}")
          continue
        after = load_average()
        loads.append((before, after))
        results[side].append(result)
        out(f"{tag}: median step {result['step_s']:.3f} s, inference "
            f"{result['infer_s']:.3f} s, peak RSS {_fmt(result.get('rss_mb'), '.0f')} MB"
            + (f" ({result['rss_start_mb']:.0f} MB before the model)"
               if result.get("rss_start_mb") is not None else "")
            + (f", XLA memory {result['xla_memory_mb']:.0f} MB"
               if result.get("xla_memory_mb") is not None else "")
            + f"; load after {_fmt(after, '.2f')}")
    rows.append(summarize(model, results, loads, torch_error))
  return rows


def _median(results: list[dict], key: str) -> Optional[float]:
  values = [r[key] for r in results if r.get(key) is not None]
  return statistics.median(values) if values else None


def _span(values: list) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "n/a"
  low, high = min(values), max(values)
  return f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"


def summarize(model: str, results: dict, loads: list, torch_error: Optional[str]) -> dict:
  """Medians over the rounds of each side's per-round median times, and the ratios."""
  jax_runs, torch_runs = results.get("jax", []), results.get("torch", [])
  row = {"model": model, "rounds": len(jax_runs),
         "jax_step_s": _median(jax_runs, "step_s"), "jax_infer_s": _median(jax_runs, "infer_s"),
         "xla_memory_mb": _median(jax_runs, "xla_memory_mb"),
         "jax_rss_mb": _median(jax_runs, "rss_mb"),
         "torch_step_s": _median(torch_runs, "step_s"),
         "torch_infer_s": _median(torch_runs, "infer_s"),
         "torch_rss_mb": _median(torch_runs, "rss_mb"),
         "load_before": _span([b for b, _ in loads]), "load_after": _span([a for _, a in loads]),
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_error": torch_error}
  both = row["torch_step_s"] is not None and row["jax_step_s"]
  row["step_ratio"] = row["torch_step_s"] / row["jax_step_s"] if both else None
  both = row["torch_infer_s"] is not None and row["jax_infer_s"]
  row["infer_ratio"] = row["torch_infer_s"] / row["jax_infer_s"] if both else None
  return row


COLUMNS = (("model", "model", "s"), ("jax step s", "jax_step_s", ".3f"),
           ("torch step s", "torch_step_s", ".3f"), ("torch/jax", "step_ratio", ".2f"),
           ("jax infer s", "jax_infer_s", ".3f"), ("torch infer s", "torch_infer_s", ".3f"),
           ("infer torch/jax", "infer_ratio", ".2f"), ("XLA mem MB", "xla_memory_mb", ".0f"),
           ("jax RSS MB", "jax_rss_mb", ".0f"), ("torch RSS MB", "torch_rss_mb", ".0f"),
           ("load before", "load_before", "s"), ("load after", "load_after", "s"),
           ("date", "date", "s"))


def table(rows: Sequence[dict]) -> str:
  """Markdown table of :func:`compare`'s rows (ratio > 1: JAX is faster)."""
  lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
           "|" + "---|" * len(COLUMNS)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(row.get(key), spec) for _, key, spec in COLUMNS) + " |")
  for row in rows:
    if row.get("torch_error"):
      lines.append(f"\n{row['model']}: torch worker failed: {row['torch_error']}")
  return "\n".join(lines)
