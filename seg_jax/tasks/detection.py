"""Detection task (DETR): set loss for training, box AP for evaluation, box overlays.

Batches come from the ``instances`` data task: ``image``, ``boxes`` (B,M,4) xyxy pixels,
``classes`` (B,M), ``box_valid`` (B,M), ``instance_masks`` (B,M,H,W) (+ ``valid`` (B,) on
eval batches) and ``pad_mask`` (B,H,W) True = padding (optional: without it nothing is
padding). ``config.model.num_classes`` must be the number of *object* classes.

Padding follows DETR: the model gets the mask, and boxes are relative to each image's
content (the unpadded top-left ``content_sizes``), both in the loss targets and when
predictions are turned back into pixels.

Evaluation during training is the summable in-graph approximation of COCO AP from
``seg_jax.metrics_coco`` (score histograms; no area ranges or crowd regions, input
resolution). The official numbers come from ``seg_jax.coco_eval``
(``python -m experiments.evaluate_coco``).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seg_jax import metrics_coco
from seg_jax.losses import detr as detr_losses
from seg_jax.models.detr import postprocess_detr
from seg_jax.ops.boxes import box_iou

Batch = dict[str, Any]
# Mask probability above which a pixel belongs to the object (DETR has no model field for
# it; the official evaluation thresholds the mask probabilities with the same value).
MASK_THRESHOLD = 0.5


_LOSS_KEYS = ("eos_coef", "class_weight", "bbox_weight", "giou_weight", "mask_weight",
              "dice_weight", "aux_loss")  # config.loss (seg_jax.training.config.loss_config)


def _loss_kwargs(config) -> dict:
  return {k: config.loss[k] for k in _LOSS_KEYS}


def content_sizes(batch: Batch) -> jax.Array:
  """``(B, 2)`` float32 height and width of each image's content: the rows and columns that
  hold any non-padded pixel (the canvas size without ``pad_mask``)."""
  images = batch["image"]
  if batch.get("pad_mask") is None:
    return jnp.broadcast_to(jnp.array(images.shape[1:3], jnp.float32), (images.shape[0], 2))
  content = ~jnp.asarray(batch["pad_mask"]).astype(bool)
  rows = content.any(axis=2).sum(axis=1)
  cols = content.any(axis=1).sum(axis=1)
  # at least one pixel, so an all-padding filler example divides by nothing smaller
  return jnp.maximum(jnp.stack([rows, cols], axis=-1), 1).astype(jnp.float32)


def _pad_mask(batch: Batch):
  mask = batch.get("pad_mask")
  return None if mask is None else jnp.asarray(mask).astype(bool)


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  params_rng, dropout_rng = jax.random.split(rng)
  return dict(model.init({"params": params_rng, "dropout": dropout_rng},
                         jnp.asarray(batch["image"]), train=False))


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config,
            axis_name: Optional[str] = None):
  """DETR set loss; BatchNorm statistics update only when the backbone BN is trainable.

  ``axis_name`` is the ``pmap`` device axis (None under ``jit``): dropout keys differ per
  device, and the loss normalises by the global box count (psum over the axis), which
  makes every device's loss the global loss and, after the step's pmean, the exact global
  gradient. Under jit the whole batch is visible anyway.
  """
  if axis_name is not None:
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
  variables = {"params": params, "batch_stats": batch_stats}
  pad_mask = _pad_mask(batch)
  if getattr(model, "frozen_bn", True):
    outputs = model.apply(variables, batch["image"], pad_mask, train=True,
                          rngs={"dropout": rng})
  else:
    outputs, updates = model.apply(variables, batch["image"], pad_mask, train=True,
                                   rngs={"dropout": rng}, mutable=["batch_stats"])
    batch_stats = updates["batch_stats"]
  loss, metrics = detr_losses.detr_loss(outputs, batch, axis_name=axis_name,
                                        image_sizes=content_sizes(batch), **_loss_kwargs(config))
  metrics = {k: v for k, v in metrics.items() if k != "loss"}
  return loss, (metrics, batch_stats)


def predict(model, variables, batch: Batch, config) -> dict:
  """Detections sorted by score: ``boxes`` xyxy pixels, ``scores``, ``classes`` (B,Q)."""
  del config
  outputs = model.apply(variables, batch["image"], _pad_mask(batch), train=False)
  return postprocess_detr(outputs, batch["image"].shape[1:3], mask_threshold=MASK_THRESHOLD,
                          content_sizes=content_sizes(batch))


def detection_statistics(det: dict, batch: Batch, num_classes: int,
                         score_bins: int = 1000) -> dict:
  """Summable AP statistics of score-sorted detections ``det`` (see :func:`predict`).

  Returns ``tp``/``fp`` (T, C, score_bins) int32 histograms over IoU thresholds, classes and
  score bins, and ``num_gt`` (C,) ground-truth counts; examples with ``valid`` False count
  for nothing (:func:`seg_jax.metrics_coco.match_statistics`).
  """
  example_valid = batch.get("valid", jnp.ones(batch["image"].shape[0], bool))
  gt_valid = batch["box_valid"].astype(bool) & example_valid[:, None]
  det_valid = det.get("valid", jnp.ones(det["scores"].shape, bool)) & example_valid[:, None]
  iou = jax.vmap(box_iou)(det["boxes"], batch["boxes"].astype(jnp.float32))
  return metrics_coco.match_statistics(iou, det["scores"], det["classes"], det_valid,
                                       batch["classes"], gt_valid, num_classes, score_bins)


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  """Summable AP statistics of one batch (:func:`detection_statistics`)."""
  det = predict(model, variables, batch, config)
  return detection_statistics(det, batch, int(config.model.num_classes),
                              int(config.eval_score_bins))


def finalize_eval(summed: dict, info: dict, config) -> dict:
  del config
  return metrics_coco.summarize_ap(summed, "box", info.get("instance_class_names"))


def format_scores(scores: dict, info: dict) -> str:
  del info
  lines = [f"box AP {scores['box_ap']:.4f}   AP50 {scores['box_ap50']:.4f}   "
           f"AP75 {scores['box_ap75']:.4f}"]
  for name, value in scores.get("per_class_box_ap50", {}).items():
    lines.append(f"  AP50 {name:<12} {'n/a' if value is None else f'{value:.4f}'}")
  return "\n".join(lines)


def draw_boxes(image: np.ndarray, boxes, colours) -> np.ndarray:
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
    gt = draw_boxes(image, np.asarray(batch["boxes"][i])[valid],
                     colours[np.asarray(batch["classes"][i])[valid] % 255])
    keep = np.asarray(predictions["scores"][i]) > score_threshold
    dt = draw_boxes(image, np.asarray(predictions["boxes"][i])[keep],
                     colours[np.asarray(predictions["classes"][i])[keep] % 255])
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    images.append(np.concatenate([gt, gap, dt], axis=1))
  return images
