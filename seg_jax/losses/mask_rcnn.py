"""Mask R-CNN losses (torchvision normalisations), on fixed-size padded samples.

Label conventions (produced by ``seg_jax.models.rpn`` / ``roi_heads``):
  * RPN ``labels``: 1 = sampled positive anchor, 0 = sampled negative, -1 = not sampled.
  * RoI ``labels``: ``k >= 1`` = sampled positive of object class ``k - 1``, 0 = sampled
    background, -1 = not sampled / padding.
Every loss is summed over the whole batch and divided by the batch-wide number of sampled
items, as torchvision does after concatenating the images.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def smooth_l1(x: jax.Array, beta: float) -> jax.Array:
  """Elementwise Huber-like loss: ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - beta/2``."""
  ax = jnp.abs(x)
  if beta <= 0:
    return ax
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def rpn_losses(logits: jax.Array, deltas: jax.Array, labels: jax.Array, targets: jax.Array,
               beta: float = 1.0 / 9) -> tuple[jax.Array, jax.Array]:
  """Objectness BCE (mean over sampled) and box smooth-L1 (sum over positives / sampled).

  Args: logits ``(..., A)``, deltas/targets ``(..., A, 4)``, labels ``(..., A)``.
  """
  sampled = labels >= 0
  positive = labels == 1
  count = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                           positive.astype(jnp.float32))
  objectness = jnp.sum(jnp.where(sampled, bce, 0.0)) / count
  box = smooth_l1(deltas.astype(jnp.float32) - targets, beta).sum(-1)
  box = jnp.sum(jnp.where(positive, box, 0.0)) / count
  return objectness, box


def fast_rcnn_losses(class_logits: jax.Array, box_deltas: jax.Array, labels: jax.Array,
                     targets: jax.Array, beta: float = 1.0 / 9) -> tuple[jax.Array, jax.Array]:
  """RoI-head cross-entropy and class-specific box regression.

  Args:
    class_logits: ``(..., R, K+1)`` (index 0 = background).
    box_deltas: ``(..., R, K+1, 4)``.
    labels: ``(..., R)`` (see module docstring).
    targets: ``(..., R, 4)`` encoded regression targets of the matched gt box.
  """
  sampled = labels >= 0
  count = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(class_logits.astype(jnp.float32), safe)
  classification = jnp.sum(jnp.where(sampled, ce, 0.0)) / count
  chosen = jnp.take_along_axis(box_deltas, safe[..., None, None], axis=-2)[..., 0, :]
  box = smooth_l1(chosen.astype(jnp.float32) - targets, beta).sum(-1)
  box = jnp.sum(jnp.where(labels > 0, box, 0.0)) / count
  return classification, box


def mask_loss(mask_logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
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
  return jnp.sum(jnp.where(positive, per_roi, 0.0)) / jnp.maximum(jnp.sum(positive), 1)


def mask_rcnn_loss(outputs: dict[str, Any],
                   weights: dict[str, float] | None = None) -> tuple[jax.Array, dict]:
  """Total loss and its five terms from the training-mode outputs of ``MaskRCNN``."""
  weights = weights or {}
  obj, rpn_box = rpn_losses(outputs["rpn_logits"], outputs["rpn_deltas"],
                            outputs["rpn_labels"], outputs["rpn_targets"])
  cls, roi_box = fast_rcnn_losses(outputs["roi_logits"], outputs["roi_deltas"],
                                  outputs["roi_labels"], outputs["roi_targets"])
  terms = {"loss_objectness": obj, "loss_rpn_box": rpn_box, "loss_classifier": cls,
           "loss_box": roi_box}
  if "mask_logits" in outputs:
    terms["loss_mask"] = mask_loss(outputs["mask_logits"], outputs["mask_labels"],
                                   outputs["mask_targets"])
  total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
  return total, terms
