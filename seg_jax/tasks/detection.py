"""Detection task (DETR): set loss for training, box AP for evaluation, box overlays.

Batches come from the ``instances`` data task: ``image``, ``boxes`` (B,M,4) xyxy pixels,
``classes`` (B,M), ``box_valid`` (B,M), ``instance_masks`` (B,M,H,W) (+ ``valid`` (B,) on
eval batches). ``config.model.num_classes`` must be the number of *object* classes.

Evaluation has to produce statistics that are summed over batches and devices (see
``seg_jax.tasks``), so AP is computed from summable histograms: every detection is matched
greedily to ground truth in the graph exactly as COCO does (by descending score, to the
unmatched same-class box of highest IoU >= threshold, for IoU thresholds 0.50:0.05:0.95),
and its true/false-positive flag is added to a per-class histogram over ``score_bins``
score bins. ``finalize_eval`` turns the histograms into COCO's 101-point interpolated AP.
The only difference from pycocotools is that detections whose scores fall in the same
bin (width 1/score_bins) are ranked together; areas ranges and crowd boxes are not used.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seg_jax.losses import detr as detr_losses
from seg_jax.models.detr import postprocess_detr
from seg_jax.ops.boxes import box_iou
from seg_jax.training import sharding

Batch = dict[str, Any]
IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))


def _loss_kwargs(config) -> dict:
  loss_config = dict(config.get("loss", None) or {})
  keys = ("eos_coef", "class_weight", "bbox_weight", "giou_weight", "mask_weight",
          "dice_weight", "aux_loss")
  return {k: loss_config[k] for k in keys if loss_config.get(k) is not None}


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  params_rng, dropout_rng = jax.random.split(rng)
  return dict(model.init({"params": params_rng, "dropout": dropout_rng},
                         jnp.asarray(batch["image"]), train=False))


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config):
  """DETR set loss; BatchNorm statistics update only when the backbone BN is trainable."""
  variables = {"params": params, "batch_stats": batch_stats}
  if getattr(model, "frozen_bn", True):
    outputs = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
  else:
    outputs, updates = model.apply(variables, batch["image"], train=True,
                                   rngs={"dropout": rng}, mutable=["batch_stats"])
    batch_stats = updates["batch_stats"]
  # Under pmap, normalise by the global box count (psum over the device axis); the psum
  # makes every device's loss the global loss and, after the step's pmean, the exact
  # global gradient. Under jit the whole batch is visible anyway.
  axis_name = sharding.PMAP_AXIS if config.get("parallelism", "jit") == "pmap" else None
  loss, metrics = detr_losses.detr_loss(outputs, batch, axis_name=axis_name,
                                        **_loss_kwargs(config))
  metrics = {k: v for k, v in metrics.items() if k != "loss"}
  return loss, (metrics, batch_stats)


def predict(model, variables, batch: Batch, config) -> dict:
  """Detections sorted by score: ``boxes`` xyxy pixels, ``scores``, ``classes`` (B,Q)."""
  del config
  outputs = model.apply(variables, batch["image"], train=False)
  return postprocess_detr(outputs, batch["image"].shape[1:3])


def _match_image(scores, classes, boxes, gt_boxes, gt_classes, gt_valid, threshold):
  """COCO greedy matching of score-sorted detections: TP flag per detection."""
  iou = box_iou(boxes, gt_boxes)  # (Q, M)
  same = (classes[:, None] == gt_classes[None, :]) & gt_valid[None, :]

  def visit(taken, q):
    candidate = same[q] & ~taken & (iou[q] >= threshold)
    best = jnp.argmax(jnp.where(candidate, iou[q], -1.0))
    hit = candidate[best]
    return taken.at[best].set(taken[best] | hit), hit

  _, tp = lax.scan(visit, jnp.zeros(gt_boxes.shape[0], bool), jnp.arange(boxes.shape[0]))
  return tp


def detection_statistics(det: dict, batch: Batch, num_classes: int,
                         score_bins: int = 1000) -> dict:
  """Summable AP statistics of score-sorted detections ``det`` (see :func:`predict`).

  Returns ``tp``/``fp`` (T, C, score_bins) int32 histograms over IoU thresholds, classes and
  score bins, and ``num_gt`` (C,) ground-truth counts; examples with ``valid`` False count
  for nothing.
  """
  example_valid = batch.get("valid", jnp.ones(batch["image"].shape[0], bool))
  gt_valid = batch["box_valid"].astype(bool) & example_valid[:, None]
  gt_classes = batch["classes"].astype(jnp.int32)
  thresholds = jnp.asarray(IOU_THRESHOLDS, jnp.float32)
  per_image = jax.vmap(_match_image, in_axes=(0, 0, 0, 0, 0, 0, None))
  tp = jax.vmap(lambda t: per_image(det["scores"], det["classes"], det["boxes"],
                                    batch["boxes"].astype(jnp.float32), gt_classes, gt_valid,
                                    t))(thresholds)  # (T, B, Q)
  score_bin = jnp.clip((det["scores"] * score_bins).astype(jnp.int32), 0, score_bins - 1)
  flat = (det["classes"] * score_bins + score_bin).reshape(-1)
  weight = jnp.broadcast_to(example_valid[:, None], det["scores"].shape).reshape(-1)

  def histogram(flags):
    counts = jnp.zeros(num_classes * score_bins, jnp.int32).at[flat].add(
        (flags.reshape(-1) & weight).astype(jnp.int32))
    return counts.reshape(num_classes, score_bins)

  num_gt = jnp.zeros(num_classes, jnp.int32).at[gt_classes.reshape(-1)].add(
      gt_valid.reshape(-1).astype(jnp.int32))
  return {"tp": jax.vmap(histogram)(tp), "fp": jax.vmap(histogram)(~tp), "num_gt": num_gt}


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  """Summable AP statistics of one batch (:func:`detection_statistics`)."""
  det = predict(model, variables, batch, config)
  return detection_statistics(det, batch, int(config.model.num_classes),
                              int(config.get("eval_score_bins", 1000) or 1000))


def average_precision(tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
  """COCO 101-point AP per (threshold, class) from score histograms; NaN without GT."""
  tp_cum = np.cumsum(np.asarray(tp, np.float64)[..., ::-1], axis=-1)  # high score first
  fp_cum = np.cumsum(np.asarray(fp, np.float64)[..., ::-1], axis=-1)
  keep = (np.asarray(tp)[..., ::-1] + np.asarray(fp)[..., ::-1]) > 0
  recall_points = np.linspace(0.0, 1.0, 101)
  ap = np.full(tp.shape[:2], np.nan)
  for t in range(tp.shape[0]):
    for c in range(tp.shape[1]):
      if num_gt[c] == 0:
        continue
      tp_c, fp_c = tp_cum[t, c][keep[t, c]], fp_cum[t, c][keep[t, c]]
      if not len(tp_c):  # no detections of this class
        ap[t, c] = 0.0
        continue
      recall = tp_c / num_gt[c]
      precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
      precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
      index = np.searchsorted(recall, recall_points, side="left")
      ap[t, c] = np.where(index < len(recall),
                          precision[np.minimum(index, len(recall) - 1)], 0.0).mean()
  return ap


def finalize_eval(summed: dict, info: dict, config) -> dict:
  del config
  ap = average_precision(summed["tp"], summed["fp"], summed["num_gt"])
  names = list(info.get("instance_class_names") or []) or [str(i) for i in range(ap.shape[1])]
  nanmean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
  return {"box_ap": nanmean(ap), "box_ap50": nanmean(ap[0]), "box_ap75": nanmean(ap[5]),
          "per_class_ap50": {n: (None if np.isnan(v) else float(v))
                             for n, v in zip(names, ap[0])}}


def format_scores(scores: dict, info: dict) -> str:
  del info
  lines = [f"box AP {scores['box_ap']:.4f}   AP50 {scores['box_ap50']:.4f}   "
           f"AP75 {scores['box_ap75']:.4f}"]
  for name, value in scores.get("per_class_ap50", {}).items():
    lines.append(f"  AP50 {name:<12} {'n/a' if value is None else f'{value:.4f}'}")
  return "\n".join(lines)


def _draw_boxes(image: np.ndarray, boxes, colours) -> np.ndarray:
  image = image.copy()
  height, width = image.shape[:2]
  for (x1, y1, x2, y2), colour in zip(boxes, colours):
    x1, x2 = np.clip([int(x1), int(np.ceil(x2)) - 1], 0, width - 1)
    y1, y2 = np.clip([int(y1), int(np.ceil(y2)) - 1], 0, height - 1)
    image[y1:y2 + 1, [x1, x2]] = colour
    image[[y1, y2], x1:x2 + 1] = colour
  return image


def overlays(batch: Batch, predictions, info: dict, config,
             score_threshold: float = 0.5) -> list[np.ndarray]:
  """``ground truth | detections (score > 0.5)`` strips, box colour = class."""
  from seg_jax.tasks.semantic import _to_uint8_image, palette  # pylint: disable=g-import-not-at-top
  del info
  colours = palette()[1:]
  if isinstance(predictions, np.ndarray) and predictions.dtype == object:
    predictions = predictions.item()  # the loop may wrap the dict with np.asarray
  images = []
  for i in range(np.asarray(predictions["scores"]).shape[0]):
    image = _to_uint8_image(np.asarray(batch["image"][i]), config.data)
    valid = np.asarray(batch["box_valid"][i]).astype(bool)
    gt = _draw_boxes(image, np.asarray(batch["boxes"][i])[valid],
                     colours[np.asarray(batch["classes"][i])[valid] % 255])
    keep = np.asarray(predictions["scores"][i]) > score_threshold
    dt = _draw_boxes(image, np.asarray(predictions["boxes"][i])[keep],
                     colours[np.asarray(predictions["classes"][i])[keep] % 255])
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    images.append(np.concatenate([gt, gap, dt], axis=1))
  return images
