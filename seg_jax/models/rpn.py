"""Region proposal network pieces: head, box matching, balanced sampling, proposals.

Everything works on fixed-size padded arrays with validity masks, so a whole Mask R-CNN
train step jits: matching returns per-prediction indices, sampling draws random priority
keys instead of a data-dependent permutation, and proposal selection uses top-k + the
padded :func:`seg_jax.ops.nms.batched_nms`. The per-image functions are ``vmap``-ed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.layers import Conv
from seg_jax.ops.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes
from seg_jax.ops.nms import batched_nms

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # torchvision's RPN box coder
BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class RPNHead(nn.Module):
  """Shared 3x3 conv + ReLU, then 1x1 objectness (A) and box-delta (4A) convolutions."""
  num_anchors: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Returns logits ``(B, sum HWA)`` and deltas ``(B, sum HWA, 4)`` (levels concatenated)."""
    init = nn.initializers.normal(0.01)
    conv = Conv(features[0].shape[-1], 3, kernel_init=init, dtype=self.dtype, name="conv")
    cls = Conv(self.num_anchors, 1, kernel_init=init, dtype=self.dtype, name="cls_logits")
    box = Conv(4 * self.num_anchors, 1, kernel_init=init, dtype=self.dtype, name="bbox_pred")
    logits, deltas = [], []
    for x in features:
      t = nn.relu(conv(x))
      batch = x.shape[0]
      logits.append(cls(t).reshape(batch, -1))
      deltas.append(box(t).reshape(batch, -1, 4))
    return jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1)


def match_boxes(iou: jax.Array, gt_valid: jax.Array, high: float, low: float,
                allow_low_quality: bool, pred_valid: Optional[jax.Array] = None) -> jax.Array:
  """torchvision ``Matcher`` on ``iou (P, M)`` (predictions x gt).

  Returns ``(P,)`` int32: the matched gt index, ``BELOW_LOW_THRESHOLD`` (-1) or
  ``BETWEEN_THRESHOLDS`` (-2). With ``allow_low_quality`` every prediction that attains
  some gt's best IoU keeps its argmax match even below ``high``.
  """
  masked = jnp.where(gt_valid[None, :], iou, -1.0)
  if pred_valid is not None:
    masked = jnp.where(pred_valid[:, None], masked, -1.0)
  best = jnp.max(masked, axis=1)
  argmax = jnp.argmax(masked, axis=1).astype(jnp.int32)
  matches = jnp.where(best < low, BELOW_LOW_THRESHOLD,
                      jnp.where(best < high, BETWEEN_THRESHOLDS, argmax))
  if allow_low_quality:
    best_per_gt = jnp.max(masked, axis=0)
    attains = (masked == best_per_gt[None, :]) & gt_valid[None, :] & (best_per_gt[None, :] > 0)
    matches = jnp.where(jnp.any(attains, axis=1), argmax, matches)
  return matches.astype(jnp.int32)


def _rank_within(mask: jax.Array, keys: jax.Array) -> jax.Array:
  """Rank of each ``mask`` element among the masked ones, ordered by ``keys``."""
  order = jnp.argsort(jnp.where(mask, keys, jnp.inf))
  return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


def sample_balanced(rng: jax.Array, labels: jax.Array, batch_size: int,
                    positive_fraction: float) -> tuple[jax.Array, jax.Array]:
  """torchvision ``BalancedPositiveNegativeSampler`` with static shapes.

  ``labels``: ``(N,)`` with ``> 0`` positive, ``0`` negative, ``< 0`` ignored. Draws
  ``min(int(batch_size * fraction), #pos)`` positives and fills up to ``batch_size``
  with negatives, uniformly at random. Returns boolean ``(positive, negative)`` masks.
  """
  pos_rng, neg_rng = jax.random.split(rng)
  positive, negative = labels > 0, labels == 0
  num_pos = jnp.minimum(int(batch_size * positive_fraction), jnp.sum(positive))
  num_neg = jnp.minimum(batch_size - num_pos, jnp.sum(negative))
  pos_rank = _rank_within(positive, jax.random.uniform(pos_rng, labels.shape))
  neg_rank = _rank_within(negative, jax.random.uniform(neg_rng, labels.shape))
  return positive & (pos_rank < num_pos), negative & (neg_rank < num_neg)


def anchor_targets(rng: jax.Array, anchors: jax.Array, gt_boxes: jax.Array,
                   gt_valid: jax.Array, *, batch_size: int, positive_fraction: float,
                   high: float, low: float) -> tuple[jax.Array, jax.Array]:
  """Per image: sampled anchor labels ``(A,)`` (1/0/-1) and box targets ``(A, 4)``."""
  matches = match_boxes(box_iou(anchors, gt_boxes), gt_valid, high, low, True)
  labels = jnp.where(matches >= 0, 1, jnp.where(matches == BELOW_LOW_THRESHOLD, 0, -1))
  pos, neg = sample_balanced(rng, labels, batch_size, positive_fraction)
  sampled_labels = jnp.where(pos, 1, jnp.where(neg, 0, -1)).astype(jnp.int32)
  # Non-positive anchors are encoded against themselves (zero targets, no log(0)).
  matched = jnp.where(pos[:, None], gt_boxes[jnp.maximum(matches, 0)], anchors)
  targets = encode_boxes(matched, anchors, RPN_BOX_WEIGHTS)
  return sampled_labels, jnp.where(pos[:, None], targets, 0.0)


def select_proposals(logits: jax.Array, deltas: jax.Array, anchors: jax.Array,
                     level_sizes: Sequence[int], image_size: Sequence[int], *,
                     pre_nms_top_n: int, post_nms_top_n: int, nms_threshold: float,
                     min_size: float = 1e-3) -> tuple[jax.Array, jax.Array]:
  """Per image: top-k per level, decode, clip, drop tiny boxes, NMS per level.

  Returns proposals ``(post_nms_top_n, 4)`` sorted by objectness and their validity.
  """
  logits = jax.lax.stop_gradient(logits)
  deltas = jax.lax.stop_gradient(deltas)
  cand_logits, cand_deltas, cand_anchors, cand_levels = [], [], [], []
  start = 0
  for level, size in enumerate(level_sizes):
    k = min(pre_nms_top_n, size)
    top, idx = jax.lax.top_k(logits[start:start + size], k)
    cand_logits.append(top)
    cand_deltas.append(deltas[start:start + size][idx])
    cand_anchors.append(anchors[start:start + size][idx])
    cand_levels.append(jnp.full((k,), level, jnp.int32))
    start += size
  scores = jax.nn.sigmoid(jnp.concatenate(cand_logits))
  boxes = decode_boxes(jnp.concatenate(cand_deltas), jnp.concatenate(cand_anchors),
                       RPN_BOX_WEIGHTS)
  boxes = clip_boxes(boxes, image_size[0], image_size[1])
  levels = jnp.concatenate(cand_levels)
  valid = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  valid &= jnp.isfinite(scores)
  keep = batched_nms(boxes, scores, levels, nms_threshold, post_nms_top_n, valid=valid)
  kept_valid = keep >= 0
  proposals = jnp.where(kept_valid[:, None], boxes[jnp.maximum(keep, 0)], 0.0)
  return proposals, kept_valid
