"""The best mean IU a score map at output stride ``s`` can reach once upsampled bilinearly.

FCN-32s/16s/8s predict class scores on a grid ``s`` = 32/16/8 times coarser than the image
and upsample them bilinearly. A natural ceiling for such a model is the *oracle* score map:
the one-hot ground truth average-pooled to the ``s`` px grid (each cell holds its class
fractions), upsampled back with bilinear interpolation (half-pixel centres, edges clamped,
as ``jax.image.resize``) and arg-maxed. It is not a strict bound (learned logits are not
limited to class fractions), but it shows how much a grid of that stride can outline:
on ``shapes`` at 64 px the stride-8 oracle reaches 0.70 mean IU, at 128 px 0.88 (README).

``python -m experiments.stride_ceiling --builder_configs=64,128 --strides=32,16,8,4``
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import metrics


def oracle_predictions(labels: np.ndarray, num_classes: int, stride: int) -> np.ndarray:
  """``(N, H, W)`` int labels -> the stride-``stride`` oracle's ``(N, H, W)`` predictions."""
  labels = np.asarray(labels)
  if labels.ndim != 3:
    raise ValueError(f"labels must be (N, H, W), got shape {labels.shape}")
  n, height, width = labels.shape
  if stride < 1 or height % stride or width % stride:
    raise ValueError(f"stride must be >= 1 and divide the label size {height}x{width}, "
                     f"got {stride}")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")
  onehot = np.eye(num_classes, dtype=np.float32)[labels]
  grid = onehot.reshape(n, height // stride, stride, width // stride, stride,
                        num_classes).mean(axis=(2, 4))
  scores = jax.image.resize(jnp.asarray(grid), (n, height, width, num_classes), "bilinear")
  return np.asarray(jnp.argmax(scores, axis=-1))


def ceiling(labels: np.ndarray, num_classes: int, stride: int) -> dict:
  """FCN scores (``metrics.segmentation_scores``) of the stride-``stride`` oracle."""
  predictions = oracle_predictions(labels, num_classes, stride)
  confusion = metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions),
                                       num_classes)
  return metrics.segmentation_scores(confusion)


def run(label_sets: dict, num_classes: int, strides: Sequence[int],
        class_names: Sequence[str]) -> list[dict]:
  """Prints one table row per (label set, stride); returns the rows."""
  rows = []
  header = "| labels | stride | mean IU | " + " | ".join(class_names) + " |"
  print(header)
  print("|---|---:|---:|" + "---:|" * len(class_names))
  for name, labels in label_sets.items():
    for stride in strides:
      scores = ceiling(labels, num_classes, stride)
      per_class = " | ".join(f"{v:.3f}" for v in scores["per_class_iou"])
      print(f"| {name} | {stride} | {scores['mean_iou']:.3f} | {per_class} |")
      rows.append({"labels": name, "stride": stride, **scores})
  return rows
