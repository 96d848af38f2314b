"""Mask R-CNN losses (torchvision normalisations), on fixed-size padded samples.

Label conventions (produced by ``seg_jax.models.rpn`` / ``roi_heads``):
  * RPN ``labels``: 1 = sampled positive anchor, 0 = sampled negative, -1 = not sampled.
  * RoI ``labels``: ``k >= 1`` = sampled positive of object class ``k - 1``, 0 = sampled
    background, -1 = not sampled / padding.
Every loss is summed over the whole batch and divided by the batch-wide number of sampled
items, as torchvision does after concatenating the images. Under ``pmap`` pass the device
``axis_name``: sums and counts are then summed over devices (the global batch), so every
device's loss is the global loss and, after the step's pmean, the gradient is the jit one.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax


def _sum(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Sum over everything, and over the pmap devices when ``axis_name`` is given."""
  total = jnp.sum(x)
  return lax.psum(total, axis_name) if axis_name is not None else total


def smooth_l1(x: jax.Array, beta: float) -> jax.Array:
  """Elementwise Huber-like loss: ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - beta/2``."""
  ax = jnp.abs(x)
  if beta <= 0:
    return ax
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def rpn_losses(logits: jax.Array, deltas: jax.Array, labels: jax.Array, targets: jax.Array,
               beta: float = 1.0 / 9,
               axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """Objectness BCE (mean over sampled) and box smooth-L1 (sum over positives / sampled).

  Args: logits ``(..., A)``, deltas/targets ``(..., A, 4)``, labels ``(..., A)``.
  """
  sampled = labels >= 0
  positive = labels == 1
  count = jnp.maximum(_sum(sampled.astype(jnp.float32), axis_name), 1.0)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                           positive.astype(jnp.float32))
  objectness = _sum(jnp.where(sampled, bce, 0.0), axis_name) / count
  box = smooth_l1(deltas.astype(jnp.float32) - targets, beta).sum(-1)
  box = _sum(jnp.where(positive, box, 0.0), axis_name) / count
  return objectness, box


def fast_rcnn_losses(class_logits: jax.Array, box_deltas: jax.Array, labels: jax.Array,
                     targets: jax.Array, beta: float = 1.0 / 9,
                     axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """RoI-head cross-entropy and class-specific box regression.

  Args:
    class_logits: ``(..., R, K+1)`` (index 0 = background).
    box_deltas: ``(..., R, K+1, 4)``.
    labels: ``(..., R)`` (see module docstring).
    targets: ``(..., R, 4)`` encoded regression targets of the matched gt box.
  """
  sampled = labels >= 0
  count = jnp.maximum(_sum(sampled.astype(jnp.float32), axis_name), 1.0)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(class_logits.astype(jnp.float32), safe)
  classification = _sum(jnp.where(sampled, ce, 0.0), axis_name) / count
  chosen = jnp.take_along_axis(box_deltas, safe[..., None, None], axis=-2)[..., 0, :]
  box = smooth_l1(chosen.astype(jnp.float32) - targets, beta).sum(-1)
  box = _sum(jnp.where(labels > 0, box, 0.0), axis_name) / count
  return classification, box


def mask_loss(mask_logits: jax.Array, labels: jax.Array, targets: jax.Array,
              axis_name: Optional[str] = None) -> jax.Array:
  """Per-pixel BCE of the gt class's mask, mean over positive RoIs and pixels.

  Args:
    mask_logits: ``(..., R, S, S, K+1)``.
    labels: ``(..., R)``; only ``labels > 0`` count.
    targets: ``(..., R, S, S)`` soft targets in ``[0, 1]`` (RoIAligned gt masks).
  """
  positive = labels > 0
  safe = jnp.maximum(labels, 0)
  chosen = jnp.take_along_axis(mask_logits, safe[..., None, None, None], axis=-1)[..., 0]
  bce = optax.sigmoid_binary_cross_entropy(chosen.astype(jnp.float32), targets)
  per_roi = bce.mean(axis=(-2, -1))
  return _sum(jnp.where(positive, per_roi, 0.0), axis_name) / jnp.maximum(
      _sum(positive.astype(jnp.float32), axis_name), 1.0)


def mask_rcnn_loss(outputs: dict[str, Any], weights: dict[str, float] | None = None, *,
                   beta: float = 1.0 / 9,
                   axis_name: Optional[str] = None) -> tuple[jax.Array, dict]:
  """Total loss and its five terms (four without a mask head) from ``MaskRCNN(train=True)``.

  ``beta``: smooth-L1 beta of both box regressions (torchvision 1/9; Detectron2 0 = L1).
  """
  weights = weights or {}
  obj, rpn_box = rpn_losses(outputs["rpn_logits"], outputs["rpn_deltas"],
                            outputs["rpn_labels"], outputs["rpn_targets"], beta, axis_name)
  cls, roi_box = fast_rcnn_losses(outputs["roi_logits"], outputs["roi_deltas"],
                                  outputs["roi_labels"], outputs["roi_targets"], beta,
                                  axis_name)
  terms = {"loss_objectness": obj, "loss_rpn_box": rpn_box, "loss_classifier": cls,
           "loss_box": roi_box}
  if "mask_logits" in outputs:
    terms["loss_mask"] = mask_loss(outputs["mask_logits"], outputs["mask_labels"],
                                   outputs["mask_targets"], axis_name)
  total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
  return total, terms
