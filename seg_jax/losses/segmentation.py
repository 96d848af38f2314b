"""Per-pixel losses for semantic segmentation."""

from __future__ import annotations

from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, *, ignore_index: int = 255,
                        class_weights: Optional[jax.Array] = None,
                        reduction: str = "mean") -> jax.Array:
  """Softmax cross-entropy averaged (or summed) over valid pixels.

  Args:
    logits: ``(..., C)`` (computed in float32 whatever the input dtype).
    labels: ``(...)`` integer labels; ``ignore_index`` marks pixels that do not count.
    class_weights: optional ``(C,)``; the mean is then weighted like PyTorch's
      ``CrossEntropyLoss(weight=...)``: ``sum w[y] ce / sum w[y]`` over valid pixels.
    reduction: 'mean' (above) or 'sum': ``sum w[y] ce`` over valid pixels, unnormalised,
      like Caffe's ``SoftmaxWithLoss`` with ``normalize: false`` on one image (the
      reference FCN solvers; their tiny learning rates assume this scale).

  Returns 0 (not NaN) when no pixel is valid, so an all-ignore crop cannot poison a step.
  """
  if reduction not in ("mean", "sum"):
    raise ValueError(f"pixel_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"pixel_cross_entropy: logits {logits.shape} do not match labels {labels.shape}")
  num_classes = logits.shape[-1]
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  weights = valid.astype(jnp.float32)
  if class_weights is not None:
    class_weights = jnp.asarray(class_weights, jnp.float32)
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights must have shape ({num_classes},), got {class_weights.shape}")
    weights = weights * class_weights[safe_labels]
  total = jnp.sum(nll * weights)
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(weights), 1e-12)


def class_pixel_statistics(label_maps: Iterable[np.ndarray], num_classes: int,
                           ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
  """Counts for median-frequency balancing over an iterable of label maps.

  Returns ``(class_pixels, present_pixels)``: pixels of each class, and the total number of
  (valid) pixels of the images in which the class appears.
  """
  class_pixels = np.zeros(num_classes, np.int64)
  present_pixels = np.zeros(num_classes, np.int64)
  for labels in label_maps:
    labels = np.asarray(labels)
    valid = labels[(labels != ignore_index) & (labels >= 0) & (labels < num_classes)]
    counts = np.bincount(valid.ravel(), minlength=num_classes)
    class_pixels += counts
    present_pixels += np.where(counts > 0, valid.size, 0)
  return class_pixels, present_pixels


def median_frequency_weights(class_pixels, present_pixels=None) -> np.ndarray:
  """Median frequency balancing (Eigen & Fergus 2015), as used by SegNet.

  ``freq(c) = class_pixels[c] / present_pixels[c]`` (pixels of class c over the pixels of the
  images where c is present; all pixels if ``present_pixels`` is None) and
  ``weight(c) = median(freq) / freq(c)``. The median is taken over classes that occur;
  classes that never occur get weight 0.
  """
  class_pixels = np.asarray(class_pixels, np.float64)
  if present_pixels is None:
    present_pixels = np.full_like(class_pixels, class_pixels.sum())
  present_pixels = np.asarray(present_pixels, np.float64)
  if class_pixels.shape != present_pixels.shape:
    raise ValueError("median_frequency_weights: class_pixels and present_pixels differ in shape")
  occurs = (class_pixels > 0) & (present_pixels > 0)
  if not occurs.any():
    raise ValueError("median_frequency_weights: no class occurs in the statistics")
  freq = np.zeros_like(class_pixels)
  freq[occurs] = class_pixels[occurs] / present_pixels[occurs]
  weights = np.zeros_like(class_pixels)
  weights[occurs] = np.median(freq[occurs]) / freq[occurs]
  return weights.astype(np.float32)
