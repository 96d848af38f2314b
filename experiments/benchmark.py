"""Benchmarks: ``python -m experiments.benchmark [--suite=train] [--models=unet,fcn8s]``.

``--suite=train`` (default) compares the training loop's own jitted ``train_step`` with the
PyTorch eager twin of each model (``seg_jax/benchmarks/torch_reference.py``: same layers,
widths, batch and input size). Every round is a separate process (``experiments.benchmark_jax``
/ ``experiments.benchmark_torch``); rounds alternate JAX, PyTorch, JAX, PyTorch, ...
(``--rounds``, at least 2 each); each prints its median step time and the load average
before and after, with ``WARNING: machine not quiet`` when the 1-minute load is >= 0.5
before a round (each round first waits up to ``--settle_seconds`` for the load the previous
one raised to fall below ``--quiet_load``). The final markdown table has per model the
median step and inference times, the ratio torch/jax (> 1: JAX is faster), XLA's memory
estimate of the step, the peak RSS of each worker, the loads and the date. PyTorch runs with ``--torch_python`` (a
venv with ``torch``), by default this interpreter when it can import torch.

The other suites (``convs``, ``patch``, ``tiling``, ``matching``, ``style``; ``all`` runs
every one) run ``python -m experiments.benchmark_<suite>`` with its defaults.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from absl import app, flags

import experiments
from experiments import cli, configs
from seg_jax.benchmarks import compare

SUITES = ("train", "convs", "patch", "tiling", "matching", "style")

_SUITE = flags.DEFINE_enum("suite", "train", SUITES + ("all",), "Which benchmark to run.")
_MODELS = flags.DEFINE_list("models", ["unet", "fcn8s"],
                            "Models to time (PyTorch twins: unet, fcn32s, fcn16s, fcn8s).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds per side (>= 2), alternating JAX/PyTorch.")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image side.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per round (median).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per round first (JAX: compiles).")
_WIDTH = flags.DEFINE_float("width", 0.5, "Channel multiplier (U-Net 0.5 = 32 base features).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 21, "Output classes.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch twins.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", "", "Python of an environment with torch and seg_jax (default: this "
    "interpreter if it can import torch).")
_QUIET_LOAD = flags.DEFINE_float("quiet_load", compare.QUIET_LOAD,
                                 "1-minute load at or above which a round is flagged.")
_SETTLE = flags.DEFINE_float("settle_seconds", 90.0, "Wait up to this long before each round "
                             "for the load to fall below --quiet_load (the previous round lifts "
                             "it); 0: do not wait.")

# Workers run from the checkout that holds this package, whatever the caller's directory.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(experiments.__file__)))


def torch_python() -> str | None:
  """The interpreter for the PyTorch rounds, or None (no torch anywhere we know of)."""
  if _TORCH_PYTHON.value:
    if not os.access(_TORCH_PYTHON.value, os.X_OK):
      cli.fail(f"--torch_python={_TORCH_PYTHON.value} is not an executable file")
    return _TORCH_PYTHON.value
  return sys.executable if importlib.util.find_spec("torch") else None


def check_flags() -> None:
  for name, flag, low in (("rounds", _ROUNDS, 2), ("batch", _BATCH, 1), ("size", _SIZE, 1),
                          ("steps", _STEPS, 1), ("warmup", _WARMUP, 1),
                          ("num_classes", _NUM_CLASSES, 1), ("settle_seconds", _SETTLE, 0)):
    if flag.value < low:
      cli.fail(f"--{name} must be >= {low}, got {flag.value}")
  if _WIDTH.value <= 0:
    cli.fail(f"--width must be > 0, got {_WIDTH.value}")


def run_train_suite() -> None:
  python = torch_python() if _TORCH.value else None
  if _TORCH.value and python is None:
    print("torch is not importable here: JAX rounds only (pass --torch_python=/path/to/venv/"
          "bin/python of a venv with torch==2.13.0 and this project's requirements)")
  settings = dict(batch=_BATCH.value, size=_SIZE.value, width=_WIDTH.value,
                  num_classes=_NUM_CLASSES.value, steps=_STEPS.value, warmup=_WARMUP.value)
  print(f"batch {_BATCH.value}, {_SIZE.value}x{_SIZE.value}, width {_WIDTH.value}, "
        f"{_NUM_CLASSES.value} classes; median of {_STEPS.value} steps after {_WARMUP.value} "
        f"warm-up per round; {_ROUNDS.value} rounds per side; CPUs {len(os.sched_getaffinity(0))}",
        flush=True)
  rows = compare.compare(
      _MODELS.value, rounds=_ROUNDS.value,
      jax_command=[sys.executable, "-m", "experiments.benchmark_jax"],
      torch_command=[python, "-m", "experiments.benchmark_torch"] if python else None,
      settings=settings, quiet_load=_QUIET_LOAD.value,
      settle_seconds=_SETTLE.value, cwd=ROOT,
      out=lambda line: print(line, flush=True))
  print("\n" + compare.table(rows), flush=True)


def main(argv) -> None:
  configs.start_cli(argv)
  check_flags()
  suites = SUITES if _SUITE.value == "all" else (_SUITE.value,)
  for suite in suites:
    load = compare.load_average()
    print(f"\n## {suite} (load average {'n/a' if load is None else f'{load:.2f}'})\n",
          flush=True)
    if suite == "train":
      run_train_suite()
    else:
      done = subprocess.run([sys.executable, "-m", f"experiments.benchmark_{suite}"], cwd=ROOT,
                            check=False)
      if done.returncode != 0:
        cli.fail(f"--suite={suite}: experiments.benchmark_{suite} exited with code "
                 f"{done.returncode}")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
