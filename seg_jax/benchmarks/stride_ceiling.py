"""How well a score map at output stride ``s`` can outline objects once upsampled bilinearly.

FCN-32s/16s/8s predict class scores on a grid ``s`` = 32/16/8 times coarser than the image
and upsample them bilinearly (half-pixel centres, edges clamped, as ``jax.image.resize``).
Two oracles, both given the ground truth, measure what such a grid can express:

* ``pooled``: the one-hot labels average-pooled to the grid (each cell holds its class
  fractions), upsampled and arg-maxed — the naive answer, and no bound: a model's logits are
  not limited to fractions (our FCN-32s beats it at 128 px);
* ``fitted``: per image, the coarse logits that minimise the pixel cross-entropy of their
  upsampled map against the labels (Adam from the pooled start) — what a grid of that stride
  can express at best under that loss. Still not a strict bound on an FCN: cross-entropy is
  not mean IU (where an object cannot be drawn, the optimum hedges towards background), and
  FCN's grid over its 100 px padding has another phase than this image-aligned one (our 64 px
  FCN-32s reached 0.239 against the fitted 0.211).

On ``shapes`` the fitted stride-8 value is 0.88 mean IU at 64 px and 0.96 at 128 px (README).

``python -m experiments.stride_ceiling --builder_configs=64,128 --strides=32,16,8,4``
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seg_jax import metrics


def pooled_predictions(labels: np.ndarray, num_classes: int, stride: int) -> np.ndarray:
  """``(N, H, W)`` int labels -> the ``pooled`` oracle's ``(N, H, W)`` predictions."""
  labels = np.asarray(labels)
  _check(labels, num_classes, stride)
  grid = _pooled(labels, num_classes, stride)
  scores = jax.image.resize(jnp.asarray(grid), labels.shape + (num_classes,), "bilinear")
  return np.asarray(jnp.argmax(scores, axis=-1))


def _check(labels: np.ndarray, num_classes: int, stride: int) -> None:
  if labels.ndim != 3:
    raise ValueError(f"labels must be (N, H, W), got shape {labels.shape}")
  _, height, width = labels.shape
  if stride < 1 or height % stride or width % stride:
    raise ValueError(f"stride must be >= 1 and divide the label size {height}x{width}, "
                     f"got {stride}")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")


def _pooled(labels: np.ndarray, num_classes: int, stride: int) -> np.ndarray:
  n, height, width = labels.shape
  onehot = np.eye(num_classes, dtype=np.float32)[labels]
  return onehot.reshape(n, height // stride, stride, width // stride, stride,
                        num_classes).mean(axis=(2, 4))


def fitted_predictions(labels: np.ndarray, num_classes: int, stride: int, *,
                       steps: int = 300, learning_rate: float = 0.5) -> np.ndarray:
  """The ``fitted`` oracle's ``(N, H, W)`` predictions (see the module docstring)."""
  labels = np.asarray(labels)
  _check(labels, num_classes, stride)
  full_shape = labels.shape + (num_classes,)
  optimizer = optax.adam(learning_rate)

  def loss(logits, targets):
    upsampled = jax.image.resize(logits, full_shape, "bilinear")
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(upsampled),
                                         targets[..., None], axis=-1))

  @jax.jit
  def fit(logits, targets):
    def step(carry, _):
      logits, state = carry
      grads = jax.grad(loss)(logits, targets)
      updates, state = optimizer.update(grads, state)
      return (optax.apply_updates(logits, updates), state), None
    (logits, _), _ = jax.lax.scan(step, (logits, optimizer.init(logits)), None, length=steps)
    return jnp.argmax(jax.image.resize(logits, full_shape, "bilinear"), axis=-1)

  start = jnp.log(jnp.asarray(_pooled(labels, num_classes, stride)) + 1e-3)
  return np.asarray(fit(start, jnp.asarray(labels, jnp.int32)))


ORACLES = {"pooled": pooled_predictions, "fitted": fitted_predictions}


def ceiling(labels: np.ndarray, num_classes: int, stride: int, oracle: str = "pooled") -> dict:
  """FCN scores (``metrics.segmentation_scores``) of the stride-``stride`` ``oracle``."""
  if oracle not in ORACLES:
    raise ValueError(f"oracle must be one of {sorted(ORACLES)}, got {oracle!r}")
  predictions = ORACLES[oracle](labels, num_classes, stride)
  confusion = metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions),
                                       num_classes)
  return metrics.segmentation_scores(confusion)


def run(label_sets: dict, num_classes: int, strides: Sequence[int],
        class_names: Sequence[str]) -> list[dict]:
  """Prints one table row per (label set, stride, oracle); returns the rows."""
  rows = []
  print("| labels | stride | oracle | mean IU | " + " | ".join(class_names) + " |")
  print("|---|---:|---|---:|" + "---:|" * len(class_names))
  for name, labels in label_sets.items():
    for stride in strides:
      for oracle in ORACLES:
        scores = ceiling(labels, num_classes, stride, oracle)
        per_class = " | ".join(f"{v:.3f}" for v in scores["per_class_iou"])
        print(f"| {name} | {stride} | {oracle} | {scores['mean_iou']:.3f} | {per_class} |",
              flush=True)
        rows.append({"labels": name, "stride": stride, "oracle": oracle, **scores})
  return rows
