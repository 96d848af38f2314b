"""DETR's set prediction loss: Hungarian matching, then class / box / mask losses.

Plain functions with their dependencies as keyword arguments. Conventions:
- model outputs as produced by :class:`seg_jax.models.detr.DETR` (boxes sigmoid cxcywh
  normalised to the image; the last logit is "no object");
- targets padded to a fixed count ``M`` with a validity mask, i.e. the data batch
  ``{'image' (B,H,W,3), 'boxes' (B,M,4) xyxy pixels, 'classes' (B,M), 'box_valid' (B,M),
  'instance_masks' (B,M,H,W)}``. Images without objects are fine (all-False ``box_valid``).

Every decoder layer is matched independently (the matching itself gets no gradient).
Box and mask losses are normalised by the number of real target boxes in the global batch
(``psum`` over ``axis_name`` under ``pmap``; under ``jit`` the whole batch is visible).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from seg_jax.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from seg_jax.ops.matching import hungarian_matching, hungarian_matching_scipy

Matcher = Callable[..., tuple[jax.Array, jax.Array]]
_DUMMY_BOX = jnp.array([0.5, 0.5, 1.0, 1.0], jnp.float32)  # keeps padded rows NaN-free


def normalized_targets(batch: dict, image_sizes: Optional[jax.Array] = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Batch -> ``(classes (B,M), boxes (B,M,4) normalised cxcywh, valid (B,M))``.

  Boxes are divided by each image's ``image_sizes`` ``(B, 2)`` (height, width: DETR's
  unpadded size), by default the batch's canvas. Padded boxes are replaced by a harmless
  dummy box so no NaN appears anywhere (a NaN in a masked-out branch would still poison
  gradients).
  """
  valid = batch["box_valid"].astype(bool)
  if image_sizes is None:
    height, width = batch["image"].shape[1:3]
    scale = jnp.array([width, height, width, height], jnp.float32)
  else:
    sizes = jnp.asarray(image_sizes, jnp.float32)
    scale = jnp.stack([sizes[:, 1], sizes[:, 0]] * 2, axis=-1)[:, None]
  boxes = batch["boxes"].astype(jnp.float32) / scale
  boxes = jnp.where(valid[..., None], box_xyxy_to_cxcywh(boxes), _DUMMY_BOX)
  return batch["classes"].astype(jnp.int32), boxes, valid


def matching_cost(logits: jax.Array, boxes: jax.Array, tgt_classes: jax.Array,
                  tgt_boxes: jax.Array, *, class_weight: float = 1.0, bbox_weight: float = 5.0,
                  giou_weight: float = 2.0) -> jax.Array:
  """DETR's matching cost for one image: ``(Q,K+1), (Q,4), (M,), (M,4) -> (Q, M)``.

  ``class_weight * (-p[class]) + bbox_weight * L1(cxcywh) + giou_weight * (-GIoU(xyxy))``.
  """
  prob = jax.nn.softmax(logits, axis=-1)
  cost_class = -prob[:, tgt_classes]
  cost_bbox = jnp.abs(boxes[:, None, :] - tgt_boxes[None, :, :]).sum(-1)
  cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
  return class_weight * cost_class + bbox_weight * cost_bbox + giou_weight * cost_giou


def match_predictions(logits: jax.Array, boxes: jax.Array, tgt_classes: jax.Array,
                      tgt_boxes: jax.Array, tgt_valid: jax.Array, *,
                      matcher: Matcher = hungarian_matching, class_weight: float = 1.0,
                      bbox_weight: float = 5.0, giou_weight: float = 2.0) -> jax.Array:
  """Per-image Hungarian matching; returns ``(B, Q)`` target index per query, -1 = unmatched.

  ``matcher(cost (Q,M), col_valid (M,)) -> (rows, cols)`` with the contract of
  :func:`seg_jax.ops.hungarian_matching`; it is vmapped over the batch.
  """
  num_queries = logits.shape[1]

  def one_image(lg, bx, cls, tb, valid):
    cost = matching_cost(lg, bx, cls, tb, class_weight=class_weight, bbox_weight=bbox_weight,
                         giou_weight=giou_weight)
    rows, cols = matcher(lax.stop_gradient(cost), valid)
    keep = valid[cols]
    return jnp.full((num_queries,), -1, jnp.int32).at[rows].set(jnp.where(keep, cols, -1))

  return jax.vmap(one_image)(logits, boxes, tgt_classes, tgt_boxes, tgt_valid)


def scipy_matcher(cost: jax.Array, col_valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Drop-in ``matcher`` running scipy on the host via ``jax.pure_callback`` (for comparison)."""
  k = min(cost.shape[-2:])
  shape = jax.ShapeDtypeStruct(cost.shape[:-2] + (k,), jnp.int32)
  return jax.pure_callback(hungarian_matching_scipy, (shape, shape), cost, col_valid,
                           vmap_method="sequential")


def _sum(x, axis_name):
  x = jnp.sum(x)
  return lax.psum(x, axis_name) if axis_name is not None else x


def _gather_targets(values: jax.Array, indices: jax.Array) -> jax.Array:
  """``values (B,M,...)``, ``indices (B,Q)`` (-1 allowed) -> ``(B,Q,...)``."""
  safe = jnp.maximum(indices, 0)
  return jax.vmap(lambda v, i: v[i])(values, safe)


def box_losses(logits: jax.Array, boxes: jax.Array, indices: jax.Array, tgt_classes: jax.Array,
               tgt_boxes: jax.Array, num_boxes: jax.Array, *, eos_coef: float = 0.1,
               axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """CE (no-object weighted by ``eos_coef``), L1 and GIoU losses given a matching.

  CE is a class-weighted mean over all queries (as ``F.cross_entropy(weight=...)``); L1 and
  GIoU are sums over matched queries divided by ``num_boxes``.
  """
  num_classes = logits.shape[-1] - 1
  matched = indices >= 0
  target = jnp.where(matched, _gather_targets(tgt_classes, indices), num_classes)
  weight = jnp.where(target == num_classes, eos_coef, 1.0)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), target[..., None], -1)[..., 0]
  loss_ce = _sum(weight * nll, axis_name) / _sum(weight, axis_name)
  matched_boxes = jnp.where(matched[..., None], _gather_targets(tgt_boxes, indices), _DUMMY_BOX)
  l1 = jnp.abs(boxes - matched_boxes).sum(-1)
  pair_giou = jax.vmap(lambda a, b: generalized_box_iou(a[None], b[None])[0, 0])
  giou = pair_giou(box_cxcywh_to_xyxy(boxes).reshape(-1, 4),
                   box_cxcywh_to_xyxy(matched_boxes).reshape(-1, 4)).reshape(matched.shape)
  return {"loss_ce": loss_ce,
          "loss_bbox": _sum(jnp.where(matched, l1, 0.0), axis_name) / num_boxes,
          "loss_giou": _sum(jnp.where(matched, 1.0 - giou, 0.0), axis_name) / num_boxes}


def sigmoid_focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = 0.25,
                       gamma: float = 2.0) -> jax.Array:
  """Elementwise focal loss (Lin et al. 2017) on logits; ``targets`` may be soft in [0, 1]."""
  prob = jax.nn.sigmoid(logits)
  ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  p_t = prob * targets + (1 - prob) * (1 - targets)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
  return loss


def dice_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """``1 - (2|P∩T| + 1) / (|P| + |T| + 1)`` per mask over the trailing two axes."""
  prob = jax.nn.sigmoid(logits)
  inter = (prob * targets).sum((-2, -1))
  return 1 - (2 * inter + 1) / (prob.sum((-2, -1)) + targets.sum((-2, -1)) + 1)


def mask_losses(pred_masks: jax.Array, indices: jax.Array, tgt_masks: jax.Array,
                num_boxes: jax.Array, *, alpha: float = 0.25, gamma: float = 2.0,
                axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """Focal (mean over pixels) + dice on matched masks, summed and divided by ``num_boxes``.

  Target masks ``(B,M,H,W)`` are resized (antialiased bilinear, giving soft targets) to the
  prediction resolution ``(h, w)`` rather than upsampling 100 predictions per image.
  """
  b, m = tgt_masks.shape[:2]
  h, w = pred_masks.shape[-2:]
  targets = jax.image.resize(tgt_masks.astype(jnp.float32), (b, m, h, w), "linear")
  targets = jnp.clip(_gather_targets(targets, indices), 0.0, 1.0)
  matched = indices >= 0
  focal = sigmoid_focal_loss(pred_masks, targets, alpha, gamma).mean((-2, -1))
  dice = dice_loss(pred_masks, targets)
  return {"loss_mask": _sum(jnp.where(matched, focal, 0.0), axis_name) / num_boxes,
          "loss_dice": _sum(jnp.where(matched, dice, 0.0), axis_name) / num_boxes}


def detr_loss(outputs: dict, batch: dict, *, eos_coef: float = 0.1, class_weight: float = 1.0,
              bbox_weight: float = 5.0, giou_weight: float = 2.0, mask_weight: float = 1.0,
              dice_weight: float = 1.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
              aux_loss: bool = True, matcher: Matcher = hungarian_matching,
              axis_name: Optional[str] = None, image_sizes: Optional[jax.Array] = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total DETR loss and its components; the weights double as matching-cost weights.

  ``image_sizes`` (B, 2): each image's unpadded (height, width) that boxes are normalised
  by (:func:`normalized_targets`; default the canvas).

  Returns ``(loss, metrics)``; ``metrics`` has the final layer's unweighted ``loss_ce``,
  ``loss_bbox``, ``loss_giou`` (+ ``loss_mask``, ``loss_dice``), ``loss_aux`` (weighted sum over
  auxiliary layers) and ``num_boxes``. Masks are used when ``outputs`` has ``pred_masks``.
  """
  tgt_classes, tgt_boxes, valid = normalized_targets(batch, image_sizes)
  num_boxes = jnp.maximum(_sum(valid.astype(jnp.float32), axis_name), 1.0)
  logits, boxes = outputs["pred_logits"][None], outputs["pred_boxes"][None]
  if aux_loss and outputs.get("aux_logits") is not None and outputs["aux_logits"].shape[0]:
    logits = jnp.concatenate([outputs["aux_logits"], logits])
    boxes = jnp.concatenate([outputs["aux_boxes"], boxes])
  weights = dict(class_weight=class_weight, bbox_weight=bbox_weight, giou_weight=giou_weight)

  def one_layer(layer_logits, layer_boxes):
    indices = match_predictions(layer_logits, layer_boxes, tgt_classes, tgt_boxes, valid,
                                matcher=matcher, **weights)
    losses = box_losses(layer_logits, layer_boxes, indices, tgt_classes, tgt_boxes, num_boxes,
                        eos_coef=eos_coef, axis_name=axis_name)
    return losses, indices

  per_layer, indices = jax.vmap(one_layer)(logits, boxes)  # every layer matched on its own
  weighted = (class_weight * per_layer["loss_ce"] + bbox_weight * per_layer["loss_bbox"]
              + giou_weight * per_layer["loss_giou"])
  metrics = {k: v[-1] for k, v in per_layer.items()}
  metrics["loss_aux"] = weighted[:-1].sum()
  total = weighted.sum()
  if "pred_masks" in outputs:
    mask = mask_losses(outputs["pred_masks"], indices[-1], batch["instance_masks"], num_boxes,
                       alpha=focal_alpha, gamma=focal_gamma, axis_name=axis_name)
    metrics.update(mask)
    total = total + mask_weight * mask["loss_mask"] + dice_weight * mask["loss_dice"]
  metrics["num_boxes"] = num_boxes
  metrics["loss"] = total
  return total, metrics
