"""Semantic-segmentation metrics with the FCN paper's definitions (Long et al. 2015, Sec. 5).

With ``n_ij`` the number of pixels of class ``i`` predicted as ``j`` and ``t_i = sum_j n_ij``:

* pixel accuracy          ``sum_i n_ii / sum_i t_i``
* mean accuracy           ``mean_i n_ii / t_i``
* mean IU                 ``mean_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU   ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes whose ratio is 0/0 are excluded from the means, as in the FCN reference code
(``np.nanmean``): mean accuracy averages over classes present in the labels, mean IU over
classes present in the labels or the predictions. A class that is predicted but never
labelled therefore counts as IU 0 (it only adds false positives), which is the honest
choice for a small validation split.

The confusion matrix is built on device (jittable) and is an integer count, so matrices
from batches, devices and hosts are simply summed before the scores are computed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     ignore_index: int = 255) -> jax.Array:
  """``(C, C)`` int32 counts: rows are labels, columns predictions.

  Pixels whose label is ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
  """
  if labels.shape != predictions.shape:
    raise ValueError(f"confusion_matrix: labels {labels.shape} and predictions "
                     f"{predictions.shape} must have the same shape")
  labels = labels.reshape(-1).astype(jnp.int32)
  predictions = predictions.reshape(-1).astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  valid &= (predictions >= 0) & (predictions < num_classes)
  flat = jnp.where(valid, labels * num_classes + predictions, 0)
  counts = jnp.bincount(flat, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def segmentation_scores(confusion) -> dict:
  """FCN metrics from a (summed) confusion matrix; see the module docstring."""
  hist = np.asarray(confusion, dtype=np.float64)
  if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
    raise ValueError(f"segmentation_scores expects a square (C, C) matrix, got {hist.shape}")
  true_positives = np.diag(hist)
  label_totals = hist.sum(axis=1)        # t_i
  predicted_totals = hist.sum(axis=0)    # sum_j n_ji
  union = label_totals + predicted_totals - true_positives
  total = hist.sum()
  with np.errstate(divide="ignore", invalid="ignore"):
    class_accuracy = np.where(label_totals > 0, true_positives / label_totals, np.nan)
    per_class_iou = np.where(union > 0, true_positives / union, np.nan)
  present = label_totals > 0
  scores = {
      "pixel_accuracy": float(true_positives.sum() / total) if total > 0 else float("nan"),
      "mean_accuracy": _nanmean(class_accuracy),
      "mean_iou": _nanmean(per_class_iou),
      "frequency_weighted_iou": (float((label_totals[present] * per_class_iou[present]).sum() / total)
                                 if total > 0 else float("nan")),
      "per_class_iou": per_class_iou,
  }
  return scores


def _nanmean(values: np.ndarray) -> float:
  finite = values[~np.isnan(values)]
  return float(finite.mean()) if finite.size else float("nan")


def format_scores_table(scores: dict, class_names: Optional[Sequence[str]] = None) -> str:
  """The FCN results table (plus per-class IU) as markdown."""
  lines = ["| pixel acc. | mean acc. | mean IU | f.w. IU |", "|---:|---:|---:|---:|",
           "| {:.4f} | {:.4f} | {:.4f} | {:.4f} |".format(
               scores["pixel_accuracy"], scores["mean_accuracy"], scores["mean_iou"],
               scores["frequency_weighted_iou"])]
  per_class = np.asarray(scores.get("per_class_iou", []))
  if per_class.size:
    names = list(class_names) if class_names is not None else [str(i) for i in range(per_class.size)]
    if len(names) != per_class.size:
      raise ValueError(f"format_scores_table: {len(names)} class names for {per_class.size} classes")
    lines += ["", "| class | IU |", "|---|---:|"]
    lines += [f"| {name} | {'n/a' if np.isnan(iou) else f'{iou:.4f}'} |"
              for name, iou in zip(names, per_class)]
  return "\n".join(lines)
