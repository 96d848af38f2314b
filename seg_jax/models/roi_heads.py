"""Mask R-CNN RoI heads: multi-level RoIAlign, box head, mask head, targets, post-processing.

Class convention inside the heads: index 0 is background and object class ``c`` (0-based
in the data) is head index ``c + 1``. All functions are per image unless they say
otherwise and are ``vmap``-ed by the model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.layers import Conv
from seg_jax.models.rpn import match_boxes, sample_balanced
from seg_jax.ops.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes
from seg_jax.ops.nms import batched_nms
from seg_jax.ops.roi_align import assign_fpn_levels, roi_align_batched, roi_pool

ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
ROI_OPS = ("align", "align_legacy", "pool")


def pool_rois(feature: jax.Array, boxes: jax.Array, output_size: int, *, roi_op: str,
              spatial_scale: float, sampling_ratio: int = 2) -> jax.Array:
  """One level: ``(N,H,W,C), (N,R,4) -> (N,R,S,S,C)`` with the chosen RoI operator.

  ``align``: RoIAlign with pixel-centre alignment (Detectron2); ``align_legacy``: the
  paper's / torchvision's ``aligned=False``; ``pool``: Fast R-CNN's quantised RoIPool.
  """
  if roi_op == "pool":
    n, r = boxes.shape[:2]
    indices = jnp.repeat(jnp.arange(n, dtype=jnp.int32), r)
    pooled = roi_pool(feature, boxes.reshape(n * r, 4), indices, output_size,
                      spatial_scale=spatial_scale)
    return pooled.reshape(n, r, *pooled.shape[1:])
  if roi_op not in ROI_OPS:
    raise ValueError(f"roi_op must be one of {ROI_OPS}, got {roi_op!r}")
  return roi_align_batched(feature, boxes, output_size, spatial_scale=spatial_scale,
                           sampling_ratio=sampling_ratio, aligned=roi_op == "align")


def multilevel_roi_pool(features: Sequence[jax.Array], strides: Sequence[int],
                        boxes: jax.Array, output_size: int, *, roi_op: str = "align",
                        sampling_ratio: int = 2, k_min: int = 2) -> jax.Array:
  """torchvision ``MultiScaleRoIAlign`` (any of :data:`ROI_OPS`): boxes pooled from their
  FPN level.

  ``features`` are P_{k_min}.. (NHWC); ``boxes (N, R, 4)`` per image in image pixels;
  returns ``(N, R, S, S, C)``. Every level is pooled for every box and the right one
  selected (static shapes; the matmul form of :func:`roi_align_batched` keeps it cheap).
  """
  k_max = k_min + len(features) - 1
  levels = assign_fpn_levels(boxes, k_min, k_max)
  out = 0.0
  for offset, (feature, stride) in enumerate(zip(features, strides)):
    pooled = pool_rois(feature, boxes, output_size, roi_op=roi_op, spatial_scale=1.0 / stride,
                       sampling_ratio=sampling_ratio)
    out = out + jnp.where((levels == k_min + offset)[..., None, None, None], pooled, 0.0)
  return out


class BoxHead(nn.Module):
  """TwoMLPHead + FastRCNNPredictor: two FC layers, class logits and per-class deltas."""
  num_classes: int  # object classes; outputs have num_classes + 1 entries
  representation_size: int = 1024
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = pooled.reshape(pooled.shape[0], -1)
    x = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc6")(x))
    x = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc7")(x))
    k = self.num_classes + 1
    logits = nn.Dense(k, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                      name="cls_score")(x)
    deltas = nn.Dense(4 * k, dtype=self.dtype, kernel_init=nn.initializers.normal(0.001),
                      name="bbox_pred")(x)
    return logits, deltas.reshape(-1, k, 4)


class MaskHead(nn.Module):
  """Four 3x3 convs, a 2x2 stride-2 transposed conv and per-class 1x1 mask logits."""
  num_classes: int
  channels: int = 256
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    x = pooled
    for i in range(4):
      x = nn.relu(Conv(self.channels, 3, kernel_init=init, dtype=self.dtype,
                       name=f"mask_fcn{i + 1}")(x))
    # 2x2 stride-2 transposed conv: windows do not overlap, so it is one matmul + reshape.
    kernel = self.param("conv5_mask_kernel", init, (2, 2, x.shape[-1], self.channels))
    bias = self.param("conv5_mask_bias", nn.initializers.zeros_init(), (self.channels,))
    dtype = self.dtype or x.dtype
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abco->nhawbo", x, kernel.astype(dtype))
    y = nn.relu(y.reshape(n, 2 * h, 2 * w, self.channels) + bias.astype(dtype))
    return Conv(self.num_classes + 1, 1, kernel_init=init, dtype=self.dtype,
                name="mask_fcn_logits")(y)


def roi_targets(rng: jax.Array, proposals: jax.Array, proposal_valid: jax.Array,
                gt_boxes: jax.Array, gt_classes: jax.Array, gt_valid: jax.Array, *,
                batch_size: int, positive_fraction: float, fg_iou: float, bg_iou: float):
  """Per image: append gt boxes to proposals, match, sample a fixed ``batch_size``.

  Returns ``rois (R, 4)``, ``labels (R,)`` (class+1 / 0 / -1 unsampled), box ``targets
  (R, 4)`` and ``matched (R,)`` gt indices, where ``R = min(batch_size, P + M)``; the
  sampled positives come first, so the first ``int(batch_size * fraction)`` rows hold all
  positives.
  """
  boxes = jnp.concatenate([proposals, gt_boxes], 0)
  valid = jnp.concatenate([proposal_valid, gt_valid], 0)
  matches = match_boxes(box_iou(boxes, gt_boxes), gt_valid, fg_iou, bg_iou, False,
                        pred_valid=valid)
  labels = jnp.where(matches >= 0, gt_classes[jnp.maximum(matches, 0)] + 1,
                     jnp.where(matches == -1, 0, -1))
  labels = jnp.where(valid, labels, -1)
  pos, neg = sample_balanced(rng, labels, batch_size, positive_fraction)
  num_rois = min(batch_size, boxes.shape[0])
  order = jnp.argsort(jnp.where(pos, 0, jnp.where(neg, 1, 2)), stable=True)[:num_rois]
  sampled = (pos | neg)[order]
  rois = boxes[order]
  labels = jnp.where(sampled, labels[order], -1).astype(jnp.int32)
  matched = jnp.maximum(matches[order], 0)
  positive = labels > 0
  # Non-positive rows (possibly zero-size padding) are encoded on a unit box: no NaNs.
  unit = jnp.array([0.0, 0.0, 1.0, 1.0], rois.dtype)
  safe_rois = jnp.where(positive[:, None], rois, unit)
  gt = jnp.where(positive[:, None], gt_boxes[matched], unit)
  targets = jnp.where(positive[:, None], encode_boxes(gt, safe_rois, ROI_BOX_WEIGHTS), 0.0)
  return rois, labels, targets, matched


def detections(class_logits: jax.Array, box_deltas: jax.Array, proposals: jax.Array,
               proposal_valid: jax.Array, image_size: Sequence[int], *, score_threshold: float,
               nms_threshold: float, max_detections: int, min_size: float = 1e-2):
  """torchvision ``postprocess_detections`` for one image with a fixed output size.

  Returns ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` (0-based object classes) and
  ``valid (D,)``, sorted by descending score.
  """
  num_props, k = class_logits.shape
  scores = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[:, 1:]
  boxes = decode_boxes(box_deltas.astype(jnp.float32)[:, 1:],
                       proposals[:, None, :].astype(jnp.float32), ROI_BOX_WEIGHTS)
  boxes = clip_boxes(boxes, image_size[0], image_size[1]).reshape(-1, 4)
  scores = scores.reshape(-1)
  classes = jnp.tile(jnp.arange(k - 1, dtype=jnp.int32), num_props)
  valid = jnp.repeat(proposal_valid, k - 1) & (scores > score_threshold)
  valid &= ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  keep = batched_nms(boxes, scores, classes, nms_threshold, max_detections, valid=valid)
  kept = keep >= 0
  idx = jnp.maximum(keep, 0)
  return (jnp.where(kept[:, None], boxes[idx], 0.0), jnp.where(kept, scores[idx], 0.0),
          jnp.where(kept, classes[idx], -1), kept)


def paste_masks(mask_probs: jax.Array, boxes: jax.Array, image_size: Sequence[int]) -> jax.Array:
  """Resamples ``(D, S, S)`` box-relative masks into ``(D, H, W)`` image probabilities.

  Each image pixel centre is mapped into the box's ``S x S`` grid and bilinearly sampled
  with zero padding (``grid_sample(align_corners=False)`` semantics, as Detectron2's
  paste); bilinear weights are separable, so it is two small matmuls per mask.
  """
  size = mask_probs.shape[-1]
  height, width = image_size

  def axis_weights(lo, hi, n):
    centres = jnp.arange(n, dtype=jnp.float32) + 0.5
    u = (centres[None, :] - lo[:, None]) / jnp.maximum(hi - lo, 1e-6)[:, None] * size - 0.5
    taps = jnp.arange(size, dtype=jnp.float32)
    return jnp.maximum(0.0, 1.0 - jnp.abs(u[:, :, None] - taps[None, None, :]))  # (D, n, S)

  wy = axis_weights(boxes[:, 1], boxes[:, 3], height)
  wx = axis_weights(boxes[:, 0], boxes[:, 2], width)
  return jnp.einsum("dys,dst,dxt->dyx", wy, mask_probs.astype(jnp.float32), wx)
