"""COCO box / mask AP with pycocotools, from in-memory per-image predictions.

Used by Mask R-CNN (``segm`` and ``bbox``) and DETR (``bbox``). Ground truth and
detections are lists with one dict per image (the same order in both):

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

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")


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
