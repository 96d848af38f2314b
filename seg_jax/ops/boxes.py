"""Box primitives (xyxy in pixels unless stated), with torchvision semantics.

``box_iou`` / ``generalized_box_iou`` are pairwise: ``(N,4), (M,4) -> (N,M)``.
``encode_boxes`` / ``decode_boxes`` are the Faster R-CNN box coder
(torchvision ``BoxCoder``: widths are ``x2 - x1``, default weights (10, 10, 5, 5),
log-size deltas clamped at ``log(1000/16)`` when decoding).

Shapes are asserted with chex (AssertionError): pairwise functions on boxes that are not
``(N, 4)`` would otherwise broadcast silently into a wrong-shaped matrix.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes: jax.Array) -> jax.Array:
  """Area of xyxy boxes ``(..., 4) -> (...)``."""
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection_union(boxes1, boxes2):
  chex.assert_shape([boxes1, boxes2], (None, 4))
  area1 = box_area(boxes1)
  area2 = box_area(boxes2)
  top_left = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
  bottom_right = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  wh = jnp.clip(bottom_right - top_left, 0)
  inter = wh[..., 0] * wh[..., 1]
  union = area1[:, None] + area2[None, :] - inter
  return inter, union


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
  """Pairwise IoU ``(N,4), (M,4) -> (N,M)`` (torchvision.ops.box_iou)."""
  inter, union = _intersection_union(boxes1, boxes2)
  return inter / union


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
  """Pairwise generalized IoU (Rezatofighi et al. 2019), torchvision semantics."""
  inter, union = _intersection_union(boxes1, boxes2)
  iou = inter / union
  top_left = jnp.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
  bottom_right = jnp.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  wh = jnp.clip(bottom_right - top_left, 0)
  hull = wh[..., 0] * wh[..., 1]
  return iou - (hull - union) / hull


def box_xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def box_cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def clip_boxes(boxes: jax.Array, height, width) -> jax.Array:
  """Clips xyxy boxes to ``[0, width] x [0, height]``."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([jnp.clip(x1, 0, width), jnp.clip(y1, 0, height),
                    jnp.clip(x2, 0, width), jnp.clip(y2, 0, height)], axis=-1)


def encode_boxes(reference: jax.Array, proposals: jax.Array,
                 weights=(10.0, 10.0, 5.0, 5.0)) -> jax.Array:
  """Regression targets ``(dx, dy, dw, dh)`` taking ``proposals`` to ``reference``."""
  chex.assert_axis_dimension(reference, -1, 4)
  chex.assert_axis_dimension(proposals, -1, 4)
  wx, wy, ww, wh = weights
  pw = proposals[..., 2] - proposals[..., 0]
  ph = proposals[..., 3] - proposals[..., 1]
  px = proposals[..., 0] + 0.5 * pw
  py = proposals[..., 1] + 0.5 * ph
  gw = reference[..., 2] - reference[..., 0]
  gh = reference[..., 3] - reference[..., 1]
  gx = reference[..., 0] + 0.5 * gw
  gy = reference[..., 1] + 0.5 * gh
  return jnp.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                    ww * jnp.log(gw / pw), wh * jnp.log(gh / ph)], axis=-1)


def decode_boxes(deltas: jax.Array, boxes: jax.Array,
                 weights=(10.0, 10.0, 5.0, 5.0)) -> jax.Array:
  """Applies ``deltas (..., 4)`` to ``boxes (..., 4)``; inverse of :func:`encode_boxes`."""
  chex.assert_axis_dimension(deltas, -1, 4)
  chex.assert_axis_dimension(boxes, -1, 4)
  wx, wy, ww, wh = weights
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  ctr_x = boxes[..., 0] + 0.5 * widths
  ctr_y = boxes[..., 1] + 0.5 * heights
  dx = deltas[..., 0] / wx
  dy = deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, BBOX_XFORM_CLIP)
  dh = jnp.minimum(deltas[..., 3] / wh, BBOX_XFORM_CLIP)
  pred_ctr_x = dx * widths + ctr_x
  pred_ctr_y = dy * heights + ctr_y
  pred_w = jnp.exp(dw) * widths
  pred_h = jnp.exp(dh) * heights
  return jnp.stack([pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                    pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h], axis=-1)
