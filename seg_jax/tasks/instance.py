"""Instance segmentation task (Mask R-CNN): five-term loss, box and mask AP, overlays.

Batches come from the ``instances`` data task: ``image``, ``boxes`` (B,M,4) xyxy pixels,
``classes`` (B,M) 0-based, ``instance_masks`` (B,M,H,W), ``box_valid`` (B,M) (+ ``valid``
(B,) on eval batches). ``config.model.num_classes`` counts object classes only.

Evaluation must be summable over batches and devices, so box and mask AP use the same
in-graph COCO greedy matching + score histograms as ``seg_jax.tasks.detection`` (mask IoU
from the pasted binary masks). For exact pycocotools numbers on saved predictions use
``seg_jax.metrics_coco.coco_evaluate`` (see ``seg_jax.benchmarks.coco_ap``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seg_jax.losses.mask_rcnn import mask_rcnn_loss

Batch = dict[str, Any]
IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  return dict(model.init({"params": rng}, jnp.asarray(batch["image"]), train=False))


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config):
  """Sum of the RPN, box-head and mask losses (weights from ``config.loss``, default 1)."""
  variables = {"params": params, "batch_stats": batch_stats}
  outputs, updates = model.apply(variables, batch["image"], train=True, targets=batch,
                                 rngs={"sampling": rng}, mutable=["batch_stats"])
  weights = dict(config.get("loss", None) or {})
  weights = {k: float(v) for k, v in weights.items() if k.startswith("loss_") and v is not None}
  loss, terms = mask_rcnn_loss(outputs, weights)
  return loss, (terms, updates.get("batch_stats", batch_stats))


def predict(model, variables, batch: Batch, config) -> dict:
  """Score-sorted detections: ``boxes``, ``scores``, ``classes``, ``valid``, ``masks``."""
  del config
  out = model.apply(variables, batch["image"], train=False)
  return {k: out[k] for k in ("boxes", "scores", "classes", "valid", "masks")}


def _match(iou, scores_valid, classes, gt_classes, gt_valid, threshold):
  """COCO greedy matching of score-sorted detections given their IoU ``(D, M)``."""
  same = (classes[:, None] == gt_classes[None, :]) & gt_valid[None, :]

  def visit(taken, d):
    candidate = same[d] & ~taken & (iou[d] >= threshold) & scores_valid[d]
    best = jnp.argmax(jnp.where(candidate, iou[d], -1.0))
    hit = candidate[best]
    return taken.at[best].set(taken[best] | hit), hit

  _, tp = lax.scan(visit, jnp.zeros(gt_classes.shape[0], bool), jnp.arange(iou.shape[0]))
  return tp


def _mask_iou(pred, gt):
  pred = pred.astype(jnp.float32).reshape(pred.shape[0], -1)
  gt = gt.astype(jnp.float32).reshape(gt.shape[0], -1)
  inter = pred @ gt.T
  union = pred.sum(-1)[:, None] + gt.sum(-1)[None, :] - inter
  return inter / jnp.maximum(union, 1.0)


def instance_statistics(det: dict, batch: Batch, num_classes: int,
                        score_bins: int = 1000) -> dict:
  """Summable histograms ``{box,mask}_tp/_fp`` (T, C, bins) and ``num_gt`` (C,)."""
  from seg_jax.ops.boxes import box_iou  # pylint: disable=g-import-not-at-top
  example_valid = batch.get("valid", jnp.ones(batch["image"].shape[0], bool))
  gt_valid = batch["box_valid"].astype(bool) & example_valid[:, None]
  gt_classes = batch["classes"].astype(jnp.int32)
  det_valid = det["valid"] & example_valid[:, None]
  classes = jnp.maximum(det["classes"], 0)
  ious = {"box": jax.vmap(box_iou)(det["boxes"], batch["boxes"].astype(jnp.float32)),
          "mask": jax.vmap(_mask_iou)(det["masks"], batch["instance_masks"])}
  thresholds = jnp.asarray(IOU_THRESHOLDS, jnp.float32)
  score_bin = jnp.clip((det["scores"] * score_bins).astype(jnp.int32), 0, score_bins - 1)
  flat = (classes * score_bins + score_bin).reshape(-1)
  weight = det_valid.reshape(-1)

  def histogram(flags):
    counts = jnp.zeros(num_classes * score_bins, jnp.int32).at[flat].add(
        (flags.reshape(-1) & weight).astype(jnp.int32))
    return counts.reshape(num_classes, score_bins)

  stats = {"num_gt": jnp.zeros(num_classes, jnp.int32).at[gt_classes.reshape(-1)].add(
      gt_valid.reshape(-1).astype(jnp.int32))}
  per_image = jax.vmap(_match, in_axes=(0, 0, 0, 0, 0, None))
  for kind, iou in ious.items():
    tp = jax.vmap(lambda t, iou=iou: per_image(iou, det_valid, classes, gt_classes,
                                              gt_valid, t))(thresholds)
    stats[f"{kind}_tp"] = jax.vmap(histogram)(tp)
    stats[f"{kind}_fp"] = jax.vmap(histogram)(~tp)
  return stats


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  det = predict(model, variables, batch, config)
  return instance_statistics(det, batch, int(config.model.num_classes),
                             int(config.get("eval_score_bins", 1000) or 1000))


def finalize_eval(summed: dict, info: dict, config) -> dict:
  from seg_jax.tasks.detection import average_precision  # pylint: disable=g-import-not-at-top
  del config
  names = list(info.get("instance_class_names") or [])
  nanmean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
  scores = {}
  for kind in ("box", "mask"):
    ap = average_precision(summed[f"{kind}_tp"], summed[f"{kind}_fp"], summed["num_gt"])
    names = names if len(names) == ap.shape[1] else [str(i) for i in range(ap.shape[1])]
    scores.update({f"{kind}_ap": nanmean(ap), f"{kind}_ap50": nanmean(ap[0]),
                   f"{kind}_ap75": nanmean(ap[5])})
    scores[f"per_class_{kind}_ap50"] = {n: (None if np.isnan(v) else float(v))
                                        for n, v in zip(names, ap[0])}
  return scores


def format_scores(scores: dict, info: dict) -> str:
  del info
  lines = []
  for kind in ("box", "mask"):
    lines.append(f"{kind:>4} AP {scores[f'{kind}_ap']:.4f}   AP50 {scores[f'{kind}_ap50']:.4f}"
                 f"   AP75 {scores[f'{kind}_ap75']:.4f}")
  for name, value in scores.get("per_class_mask_ap50", {}).items():
    lines.append(f"  mask AP50 {name:<12} {'n/a' if value is None else f'{value:.4f}'}")
  return "\n".join(lines)


def draw_instances(image: np.ndarray, masks, boxes, classes, alpha: float = 0.5) -> np.ndarray:
  """Blends class-coloured ``masks`` (N,H,W) into a uint8 image and outlines ``boxes``."""
  from seg_jax.tasks.detection import _draw_boxes  # pylint: disable=g-import-not-at-top
  from seg_jax.tasks.semantic import palette  # pylint: disable=g-import-not-at-top
  colours = palette()[1:]
  out = image.astype(np.float32)
  for mask, cls in zip(masks, classes):
    m = np.asarray(mask, bool)[..., None]
    out = np.where(m, (1 - alpha) * out + alpha * colours[int(cls) % 255], out)
  out = np.clip(out, 0, 255).astype(np.uint8)
  return _draw_boxes(out, boxes, colours[np.asarray(classes, int) % 255])


def overlays(batch: Batch, predictions, info: dict, config,
             score_threshold: float = 0.5) -> list[np.ndarray]:
  """``ground truth | detections (score > 0.5)`` strips with masks and boxes."""
  from seg_jax.tasks.semantic import _to_uint8_image  # pylint: disable=g-import-not-at-top
  del info
  if isinstance(predictions, np.ndarray) and predictions.dtype == object:
    predictions = predictions.item()
  images = []
  for i in range(np.asarray(predictions["scores"]).shape[0]):
    image = _to_uint8_image(np.asarray(batch["image"][i]), config.data)
    valid = np.asarray(batch["box_valid"][i]).astype(bool)
    gt = draw_instances(image, np.asarray(batch["instance_masks"][i])[valid],
                        np.asarray(batch["boxes"][i])[valid],
                        np.asarray(batch["classes"][i])[valid])
    keep = (np.asarray(predictions["scores"][i]) > score_threshold)
    keep &= np.asarray(predictions["valid"][i]).astype(bool)
    dt = draw_instances(image, np.asarray(predictions["masks"][i])[keep],
                        np.asarray(predictions["boxes"][i])[keep],
                        np.asarray(predictions["classes"][i])[keep])
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    images.append(np.concatenate([gt, gap, dt], axis=1))
  return images
