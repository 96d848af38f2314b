"""COCO AP: the in-graph approximation used during training, and pycocotools on arrays.

1. In-graph, summable statistics (both detection tasks use them): every detection is
   matched greedily to ground truth as COCO does (by descending score, to the unmatched
   same-class box of highest IoU >= threshold, for IoU thresholds 0.50:0.05:0.95) and its
   true/false-positive flag is added to a per-class histogram over ``score_bins`` score
   bins (:func:`match_statistics`); :func:`average_precision` turns the summed histograms
   into COCO's 101-point interpolated AP. This is an *approximation* of the official
   number: detections whose scores share a bin (width 1/score_bins) are ranked together,
   area ranges and crowd regions are not used, and IoUs are computed at the network's
   input resolution. The official evaluation is ``seg_jax.coco_eval``.
2. :func:`coco_evaluate`: pycocotools on in-memory per-image arrays (tests, small checks).
   Ground truth and detections are lists with one dict per image (the same order in both):

* gt: ``boxes (M, 4)`` xyxy pixels, ``classes (M,)`` 0-based ints, optional ``masks
  (M, H, W)`` bool/uint8, optional ``iscrowd (M,)``, and ``height``/``width`` (taken from
  the masks when absent; needed for ``segm``).
* dt: ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)``, optional ``masks (D, H, W)``.

Padding rows can be dropped beforehand or marked with a ``valid`` bool array. Category ids
are ``class + 1`` inside pycocotools; image ids are list positions.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")


def greedy_match(iou: jax.Array, det_valid: jax.Array, classes: jax.Array,
                 gt_classes: jax.Array, gt_valid: jax.Array, threshold) -> jax.Array:
  """COCO's greedy matching of score-sorted detections of one image, TP flag per detection.

  ``iou (D, M)`` between detections and ground truth; a detection takes the unmatched
  same-class valid ground truth of highest IoU ``>= threshold``.
  """
  same = (classes[:, None] == gt_classes[None, :]) & gt_valid[None, :]

  def visit(taken, d):
    candidate = same[d] & ~taken & (iou[d] >= threshold) & det_valid[d]
    best = jnp.argmax(jnp.where(candidate, iou[d], -1.0))
    hit = candidate[best]
    return taken.at[best].set(taken[best] | hit), hit

  _, tp = lax.scan(visit, jnp.zeros(gt_classes.shape[0], bool), jnp.arange(iou.shape[0]))
  return tp


def match_statistics(iou: jax.Array, scores: jax.Array, classes: jax.Array,
                     det_valid: jax.Array, gt_classes: jax.Array, gt_valid: jax.Array,
                     num_classes: int, score_bins: int = 1000) -> dict[str, jax.Array]:
  """Summable ``tp``/``fp`` (T, C, score_bins) histograms and ``num_gt`` (C,) of a batch.

  ``iou (B, D, M)``; detections ``scores/classes/det_valid (B, D)`` sorted by descending
  score; ground truth ``gt_classes/gt_valid (B, M)``. Invalid rows count for nothing.
  """
  classes = jnp.maximum(classes.astype(jnp.int32), 0)
  gt_classes = gt_classes.astype(jnp.int32)
  per_image = jax.vmap(greedy_match, in_axes=(0, 0, 0, 0, 0, None))
  tp = jax.vmap(lambda t: per_image(iou, det_valid, classes, gt_classes, gt_valid, t))(
      jnp.asarray(IOU_THRESHOLDS, jnp.float32))  # (T, B, D)
  score_bin = jnp.clip((scores * score_bins).astype(jnp.int32), 0, score_bins - 1)
  flat = (classes * score_bins + score_bin).reshape(-1)
  weight = det_valid.reshape(-1)

  def histogram(flags):
    counts = jnp.zeros(num_classes * score_bins, jnp.int32).at[flat].add(
        (flags.reshape(-1) & weight).astype(jnp.int32))
    return counts.reshape(num_classes, score_bins)

  num_gt = jnp.zeros(num_classes, jnp.int32).at[gt_classes.reshape(-1)].add(
      gt_valid.reshape(-1).astype(jnp.int32))
  return {"tp": jax.vmap(histogram)(tp), "fp": jax.vmap(histogram)(~tp), "num_gt": num_gt}


def mask_iou(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """IoU ``(D, M)`` of binary masks ``(D, H, W)`` and ``(M, H, W)``."""
  pred = pred.astype(jnp.float32).reshape(pred.shape[0], -1)
  gt = gt.astype(jnp.float32).reshape(gt.shape[0], -1)
  inter = pred @ gt.T
  union = pred.sum(-1)[:, None] + gt.sum(-1)[None, :] - inter
  return inter / jnp.maximum(union, 1.0)


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


def nanmean(values) -> float:
  """Mean over the finite entries; NaN (not a warning) when there is none."""
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def summarize_ap(summed: dict, prefix: str, class_names) -> dict:
  """``{prefix}_ap``, ``_ap50``, ``_ap75`` and per-class AP50 from summed histograms."""
  ap = average_precision(summed["tp"], summed["fp"], summed["num_gt"])
  names = list(class_names or [])
  names = names if len(names) == ap.shape[1] else [str(i) for i in range(ap.shape[1])]
  return {f"{prefix}_ap": nanmean(ap), f"{prefix}_ap50": nanmean(ap[0]),
          f"{prefix}_ap75": nanmean(ap[5]),
          f"per_class_{prefix}_ap50": {n: (None if np.isnan(v) else float(v))
                                       for n, v in zip(names, ap[0])}}


def _rows(entry: dict, key: str):
  value = np.asarray(entry[key])
  if "valid" in entry:
    value = value[np.asarray(entry["valid"], bool)]
  return value


def _rle(mask: np.ndarray) -> dict:
  from pycocotools import mask as mask_utils
  rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
  rle["counts"] = rle["counts"].decode("ascii")
  return rle


def _xywh(box) -> list[float]:
  x0, y0, x1, y1 = [float(v) for v in box]
  return [x0, y0, x1 - x0, y1 - y0]


def _image_size(entry: dict) -> tuple[int, int]:
  if "height" in entry and "width" in entry:
    return int(entry["height"]), int(entry["width"])
  if "masks" in entry and np.asarray(entry["masks"]).ndim == 3:
    return tuple(np.asarray(entry["masks"]).shape[1:3])
  return 0, 0


def to_coco(gt: Sequence[dict], dt: Sequence[dict], iou_type: str):
  """Builds pycocotools ``COCO`` ground-truth and detection objects in memory."""
  from pycocotools.coco import COCO
  if iou_type not in ("bbox", "segm"):
    raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
  if len(gt) != len(dt):
    raise ValueError(f"coco_evaluate: {len(gt)} ground-truth images but {len(dt)} detections")
  images, annotations, classes = [], [], set()
  for image_id, entry in enumerate(gt):
    height, width = _image_size(entry)
    images.append({"id": image_id, "height": height, "width": width})
    boxes, labels = _rows(entry, "boxes"), _rows(entry, "classes")
    masks = _rows(entry, "masks") if "masks" in entry else None
    crowd = _rows(entry, "iscrowd") if "iscrowd" in entry else np.zeros(len(labels), int)
    if iou_type == "segm" and masks is None:
      raise ValueError("coco_evaluate(iou_type='segm') needs gt 'masks'")
    for i, (box, label) in enumerate(zip(boxes, labels)):
      x, y, w, h = _xywh(box)
      ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
             "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(crowd[i])}
      if masks is not None:
        ann["segmentation"] = _rle(masks[i])
        ann["area"] = float(np.asarray(masks[i], bool).sum())
      annotations.append(ann)
      classes.add(int(label) + 1)
  results = []
  for image_id, entry in enumerate(dt):
    boxes, scores, labels = _rows(entry, "boxes"), _rows(entry, "scores"), _rows(entry, "classes")
    masks = _rows(entry, "masks") if iou_type == "segm" else None
    if iou_type == "segm" and masks is None:
      raise ValueError("coco_evaluate(iou_type='segm') needs detection 'masks'")
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
      result = {"image_id": image_id, "category_id": int(label) + 1, "bbox": _xywh(box),
                "score": float(score)}
      if masks is not None:
        result["segmentation"] = _rle(masks[i])
      results.append(result)
      classes.add(int(label) + 1)
  coco_gt = COCO()
  coco_gt.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": c, "name": str(c)} for c in sorted(classes)]}
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(results) if results else COCO()
  return coco_gt, coco_dt, bool(results)


def coco_evaluate(gt: Sequence[dict], dt: Sequence[dict], iou_type: str = "bbox",
                  verbose: bool = False) -> dict[str, Any]:
  """COCO AP/AR (``AP``, ``AP50``, ``AP75``, ``APs`` ... ``ARl``) for ``bbox`` or ``segm``.

  Without any detection every score is 0.0; metrics pycocotools reports as -1 (no gt of
  that size) come back as ``nan``.
  """
  from pycocotools.cocoeval import COCOeval
  coco_gt, coco_dt, any_dt = to_coco(gt, dt, iou_type)
  if not any_dt:
    return {name: 0.0 for name in STAT_NAMES}
  evaluator = COCOeval(coco_gt, coco_dt, iou_type)
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  if verbose:
    print(output.getvalue())
  return {name: (float("nan") if value < 0 else float(value))
          for name, value in zip(STAT_NAMES, evaluator.stats)}
