"""Metric outputs of a run: JSON lines, TensorBoard (if tensorboardX is installed), PNGs.

Only process 0 writes; other processes get a writer whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  return value


def scalars_of(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Flattens nested dicts of numbers to ``{'a/b': float}`` (non-numbers dropped)."""
  flat = {}
  for key, value in values.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(scalars_of(value, name + "/"))
    elif value is not None and np.ndim(value) == 0:
      try:
        flat[name] = float(value)
      except (TypeError, ValueError):
        pass
  return flat


class MetricWriter:
  """Appends records to ``workdir/metrics.jsonl`` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter  # optional
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except Exception:  # pylint: disable=broad-except  # missing or broken: JSON lines suffice
      self._tb = None

  def write(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
    """One JSON line ``{"step", "kind", "time", **values}``; scalars also to TensorBoard."""
    if not self.enabled:
      return
    record = {"step": int(step), "kind": kind, "time": time.time(), **_jsonable(dict(values))}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in scalars_of(values, f"{kind}/").items():
        self._tb.add_scalar(name, value, int(step))

  def write_text(self, step: int, name: str, text: str) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_text(name, text, int(step))

  def write_images(self, step: int, name: str, images: Sequence[np.ndarray]) -> list[str]:
    """Saves ``workdir/overlays/<name>_<step>_<i>.png``; returns the paths."""
    if not self.enabled:
      return []
    from PIL import Image  # pylint: disable=g-import-not-at-top
    directory = os.path.join(self.workdir, "overlays")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
      path = os.path.join(directory, f"{name}_{int(step):07d}_{index}.png")
      Image.fromarray(np.asarray(image, np.uint8)).save(path)
      paths.append(path)
      if self._tb is not None:
        self._tb.add_image(f"{name}/{index}", np.asarray(image, np.uint8), int(step),
                           dataformats="HWC")
    return paths

  def close(self) -> None:
    if not self.enabled:
      return
    self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of ``workdir/metrics.jsonl``."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
