"""Instance segmentation task (Mask R-CNN, and Faster R-CNN with ``model.with_mask=False``).

Batches come from the ``instances`` data task: ``image``, ``boxes`` (B,M,4) xyxy pixels,
``classes`` (B,M) 0-based, ``instance_masks`` (B,M,H,W), ``box_valid`` (B,M) (+ ``valid``
(B,) on eval batches). ``config.model.num_classes`` counts object classes only.

Training: the five-term loss (four without masks). RPN/RoI sampling keys are per image,
``fold_in(step key, global image index)``, and every loss is normalised by batch-wide
counts summed over the ``pmap`` axis, so a pmap run equals the jit run.

Evaluation during training: the summable in-graph approximation of COCO box (and mask) AP
from ``seg_jax.metrics_coco`` (mask IoU from the pasted binary masks at input resolution).
The official numbers come from ``seg_jax.coco_eval`` (``python -m experiments.evaluate_coco``).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seg_jax import metrics_coco
from seg_jax.losses.mask_rcnn import mask_rcnn_loss
from seg_jax.ops.boxes import box_iou
from seg_jax.tasks.detection import draw_boxes
from seg_jax.tasks.semantic import _to_uint8_image, palette

Batch = dict[str, Any]
PREDICTION_KEYS = ("boxes", "scores", "classes", "valid", "masks", "mask_box_probs")


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  return dict(model.init({"params": rng}, jnp.asarray(batch["image"]), train=False))


def global_image_index(batch_size: int, axis_name: Optional[str]) -> jax.Array:
  """Index of each local example in the global batch (device-major under ``pmap``)."""
  index = jnp.arange(batch_size, dtype=jnp.int32)
  if axis_name is not None:
    index = index + lax.axis_index(axis_name) * batch_size
  return index


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config,
            axis_name: Optional[str] = None):
  """Sum of the RPN, box-head (and mask) losses, weighted by ``config.loss.loss_*``.

  ``rng`` is the step key, the same on every device; ``axis_name`` the pmap axis or None.
  """
  variables = {"params": params, "batch_stats": batch_stats}
  targets = dict(batch, image_index=global_image_index(batch["image"].shape[0], axis_name))
  outputs, updates = model.apply(variables, batch["image"], train=True, targets=targets,
                                 rngs={"sampling": rng}, mutable=["batch_stats"])
  weights = {k: float(v) for k, v in config.loss.items() if k.startswith("loss_")}
  loss, terms = mask_rcnn_loss(outputs, weights, axis_name=axis_name,
                               beta=float(config.loss.smooth_l1_beta))
  return loss, (terms, updates.get("batch_stats", batch_stats))


def predict(model, variables, batch: Batch, config) -> dict:
  """Score-sorted detections: ``boxes``, ``scores``, ``classes``, ``valid`` (+ ``masks``
  and the box-relative ``mask_box_probs`` (B,D,S,S) when the model has a mask head)."""
  del config
  out = model.apply(variables, batch["image"], train=False)
  return {k: out[k] for k in PREDICTION_KEYS if k in out}


def instance_statistics(det: dict, batch: Batch, num_classes: int,
                        score_bins: int = 1000) -> dict:
  """Summable histograms ``{box,mask}_tp/_fp`` (T, C, bins) and ``num_gt`` (C,); mask
  statistics only when ``det`` has ``masks``."""
  example_valid = batch.get("valid", jnp.ones(batch["image"].shape[0], bool))
  gt_valid = batch["box_valid"].astype(bool) & example_valid[:, None]
  det_valid = det["valid"] & example_valid[:, None]
  ious = {"box": jax.vmap(box_iou)(det["boxes"], batch["boxes"].astype(jnp.float32))}
  if "masks" in det:
    ious["mask"] = jax.vmap(metrics_coco.mask_iou)(det["masks"], batch["instance_masks"])
  stats = {}
  for kind, iou in ious.items():
    counts = metrics_coco.match_statistics(iou, det["scores"], det["classes"], det_valid,
                                           batch["classes"], gt_valid, num_classes,
                                           score_bins)
    stats["num_gt"] = counts["num_gt"]
    stats[f"{kind}_tp"], stats[f"{kind}_fp"] = counts["tp"], counts["fp"]
  return stats


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  det = predict(model, variables, batch, config)
  return instance_statistics(det, batch, int(config.model.num_classes),
                             int(config.eval_score_bins))


def finalize_eval(summed: dict, info: dict, config) -> dict:
  scores = {}
  for kind in ("box", "mask"):
    if f"{kind}_tp" in summed:
      scores.update(metrics_coco.summarize_ap(
          {"tp": summed[f"{kind}_tp"], "fp": summed[f"{kind}_fp"], "num_gt": summed["num_gt"]},
          kind, info.get("instance_class_names")))
  del config
  return scores


def format_scores(scores: dict, info: dict) -> str:
  del info
  lines = []
  for kind in ("box", "mask"):
    if f"{kind}_ap" not in scores:
      continue
    lines.append(f"{kind:>4} AP {scores[f'{kind}_ap']:.4f}   AP50 {scores[f'{kind}_ap50']:.4f}"
                 f"   AP75 {scores[f'{kind}_ap75']:.4f}")
  kind = "mask" if "mask_ap" in scores else "box"
  for name, value in scores.get(f"per_class_{kind}_ap50", {}).items():
    lines.append(f"  {kind} AP50 {name:<12} {'n/a' if value is None else f'{value:.4f}'}")
  return "\n".join(lines)


def draw_instances(image: np.ndarray, masks, boxes, classes, alpha: float = 0.5) -> np.ndarray:
  """Blends class-coloured ``masks`` (N,H,W) into a uint8 image and outlines ``boxes``."""
  colours = palette()[1:]
  out = image.astype(np.float32)
  for mask, cls in zip(masks, classes):
    m = np.asarray(mask, bool)[..., None]
    out = np.where(m, (1 - alpha) * out + alpha * colours[int(cls) % 255], out)
  out = np.clip(out, 0, 255).astype(np.uint8)
  return draw_boxes(out, boxes, colours[np.asarray(classes, int) % 255])


def overlays(batch: Batch, predictions, info: dict, config,
             score_threshold: float = 0.5) -> list[np.ndarray]:
  """``ground truth | detections (score > 0.5)`` strips with masks and boxes."""
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
    masks = np.asarray(predictions["masks"][i])[keep] if "masks" in predictions else []
    dt = draw_instances(image, masks,
                        np.asarray(predictions["boxes"][i])[keep],
                        np.asarray(predictions["classes"][i])[keep])
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    images.append(np.concatenate([gt, gap, dt], axis=1))
  return images
