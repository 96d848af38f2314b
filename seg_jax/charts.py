"""Charts of a run and of a sweep with matplotlib, in one style.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``) so nothing
touches pyplot's global state or the interactive backend; PNGs are written to a temporary
name and renamed.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

COLOR = "#4c72b0"
SECOND_COLOR = "#dd8452"
DPI = 100

# (metrics.jsonl key, panel title, record kind); a panel is drawn when its key occurs.
CURVES = (
    ("loss", "training loss", "train"),
    ("mean_iou", "mean IU (eval)", "eval"),
    ("pixel_accuracy", "pixel accuracy (eval)", "eval"),
    ("box_ap", "box AP (eval)", "eval"),
    ("mask_ap", "mask AP (eval)", "eval"),
)


def _style(ax, title: str) -> None:
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.spines[["top", "right"]].set_visible(False)
  ax.tick_params(labelsize=8)


def _save(fig: Figure, path: str) -> str:
  fig.tight_layout()
  temporary = f"{path}.{os.getpid()}.tmp"
  try:
    fig.savefig(temporary, dpi=DPI, format="png")
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.unlink(temporary)
  return path


def series(records: Sequence[dict], key: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)`` of the finite numbers ``key`` in records of ``kind``; a resumed
  run's repeated steps keep their last value."""
  points = {}
  for record in records:
    value = record.get(key)
    if record.get("kind") == kind and isinstance(value, (int, float)) and math.isfinite(value):
      points[int(record["step"])] = float(value)
  steps = np.array(sorted(points), np.int64)
  return steps, np.array([points[s] for s in steps], np.float64)


def plot_metrics(records: Sequence[dict], path: str, title: str = "") -> list[str]:
  """Draws one panel per metric present in ``records`` (``metrics.jsonl`` lines) into a PNG.

  Returns the panel titles; a ValueError if no known metric occurs.
  """
  panels = [(key, name, kind) + series(records, key, kind) for key, name, kind in CURVES]
  panels = [p for p in panels if len(p[3])]
  if not panels:
    raise ValueError(f"no {', '.join(k for k, _, _ in CURVES)} values in the records")
  last_step = max(int(p[3][-1]) for p in panels)
  fig = Figure(figsize=(4 * len(panels), 3.2))
  for index, (key, name, kind, steps, values) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), index + 1)
    ax.plot(steps, values, color=COLOR, marker="o" if len(steps) < 30 else None,
            markersize=3, linewidth=1.5)
    if key == "loss" and values.min() > 0 and values.max() / values.min() > 20:
      ax.set_yscale("log")  # losses fall by orders of magnitude early on
    ax.set_xlim(0, max(last_step, 1) * 1.03)  # every panel spans the whole run
    if kind == "eval":
      ax.set_ylim(0, 1.05)  # scores are fractions: the scale shows how far from perfect
      ax.annotate(f"{values[-1]:.3f}", (steps[-1], values[-1]), textcoords="offset points",
                  xytext=(-10, 6), fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    _style(ax, name)
  if title:
    fig.suptitle(title, fontsize=11)
  _save(fig, path)
  return [name for _, name, *_ in panels]


def bar_chart(labels: Sequence[str], values: Sequence[float], path: str, title: str,
              ylim: tuple = (0.0, 1.0)) -> str:
  """One bar per label with its value written above (sweep results)."""
  fig = Figure(figsize=(max(4, 1.2 * len(labels)), 3.5))
  ax = fig.add_subplot()
  positions = np.arange(len(values))
  ax.bar(positions, values, color=COLOR)
  ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylim(*ylim)
  for position, value in zip(positions, values):
    ax.text(position, value + 0.01 * (ylim[1] - ylim[0]), f"{value:.3f}", ha="center",
            fontsize=8)
  _style(ax, title)
  ax.grid(False, axis="x")
  return _save(fig, path)
