"""Benchmarks: ``python -m experiments.benchmark [--suite=train] [--models=unet,fcn8s]``.

``--suite=train`` (default) times a train step and inference of each semantic model
(:mod:`seg_jax.benchmarks.train_step`), side by side with PyTorch eager when ``torch`` is
importable, and prints a markdown table. ``--suite=convs`` times the U-Net's convolutions
pass by pass. ``patch``, ``tiling``, ``matching``, ``style`` run the other benchmark modules
with their defaults; ``all`` runs every suite.
"""

from __future__ import annotations

import importlib
import sys

from absl import app, flags

from seg_jax.benchmarks import train_step

SUITES = ("train", "convs", "patch", "tiling", "matching", "style")

_SUITE = flags.DEFINE_enum("suite", "train", SUITES + ("all",), "Which benchmark to run.")
_MODELS = flags.DEFINE_list("models", list(train_step.SEMANTIC_MODELS), "Models to time.")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image side.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median) after 2 warm-up steps.")
_WIDTH = flags.DEFINE_float("width", 0.5, "Channel multiplier (U-Net 0.5 = 32 base features).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 21, "Output classes.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch twin when torch imports.")


def _run_module(name: str) -> None:
  try:
    module = importlib.import_module(f"seg_jax.benchmarks.{name}")
  except ImportError as error:
    print(f"[{name}] skipped: {error}")
    return
  entry = getattr(module, "main", None)
  if entry is None:
    print(f"[{name}] skipped: no main()")
    return
  saved, sys.argv = sys.argv, [f"seg_jax.benchmarks.{name}"]
  try:
    entry()
  finally:
    sys.argv = saved


def main(argv) -> None:
  del argv
  suites = SUITES if _SUITE.value == "all" else (_SUITE.value,)
  for suite in suites:
    print(f"\n## {suite} (load average {train_step.load_average()})\n", flush=True)
    if suite == "train":
      rows = train_step.run(_MODELS.value, batch=_BATCH.value, size=_SIZE.value,
                            width=_WIDTH.value, num_classes=_NUM_CLASSES.value,
                            steps=_STEPS.value, with_torch=_TORCH.value)
      print(f"batch {_BATCH.value}, {_SIZE.value}x{_SIZE.value}, width {_WIDTH.value}, "
            f"{_NUM_CLASSES.value} classes, median of {_STEPS.value} steps; "
            f"matmul peak {rows[0].get('peak_gflops', 0):.0f} GFLOP/s\n")
      print(train_step.markdown_table(rows), flush=True)
    elif suite == "convs":
      rows = train_step.conv_profile(batch=_BATCH.value, size=_SIZE.value,
                                     base=max(1, round(64 * _WIDTH.value)), steps=_STEPS.value)
      print(train_step.conv_profile_table(rows, train_step.matmul_peak_gflops()), flush=True)
    else:
      _run_module(suite)


if __name__ == "__main__":
  app.run(main)
