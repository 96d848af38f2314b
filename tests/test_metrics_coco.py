"""COCO AP through pycocotools on cases whose AP is known in closed form."""

import numpy as np
import pytest

from seg_jax.metrics_coco import coco_evaluate


def _mask(box, size=32):
  m = np.zeros((size, size), np.uint8)
  x0, y0, x1, y1 = box
  m[y0:y1, x0:x1] = 1
  return m


GT_BOXES = np.array([[2, 2, 12, 12], [16, 16, 30, 28]], np.float32)


def _gt():
  return [{"boxes": GT_BOXES, "classes": np.array([0, 1]),
           "masks": np.stack([_mask(b.astype(int)) for b in GT_BOXES])}]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_detections_score_one(iou_type):
  dt = [{"boxes": GT_BOXES, "scores": np.array([0.9, 0.8]), "classes": np.array([0, 1]),
         "masks": _gt()[0]["masks"]}]
  scores = coco_evaluate(_gt(), dt, iou_type)
  assert scores["AP"] == pytest.approx(1.0) and scores["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_class_mean_and_half_recall(iou_type):
  # One exact hit and one false positive of the other class; the second gt is missed.
  boxes = np.array([[2, 2, 12, 12], [0, 20, 8, 30]], np.float32)
  dt = [{"boxes": boxes, "scores": np.array([0.9, 0.8]), "classes": np.array([0, 1]),
         "masks": np.stack([_mask(b.astype(int)) for b in boxes]),
         "valid": np.array([True, True])}]
  scores = coco_evaluate(_gt(), dt, iou_type)
  # Class 0: AP 1; class 1: AP 0 -> mean 0.5 at every IoU threshold.
  assert scores["AP"] == pytest.approx(0.5) and scores["AP50"] == pytest.approx(0.5)
  # One class, two gts, one hit: precision 1 up to recall 0.5 -> 51 of 101 recall points.
  gt = _gt()
  gt[0]["classes"] = np.array([0, 0])
  dt[0]["classes"] = np.array([0, 0])
  scores = coco_evaluate(gt, dt, iou_type)
  assert scores["AP"] == pytest.approx(51 / 101)


def test_valid_mask_drops_rows_and_empty_detections():
  dt = [{"boxes": GT_BOXES, "scores": np.array([0.9, 0.8]), "classes": np.array([0, 1]),
         "valid": np.array([False, False])}]
  assert coco_evaluate(_gt(), dt, "bbox")["AP"] == 0.0
  with pytest.raises(ValueError, match="iou_type"):
    coco_evaluate(_gt(), dt, "keypoints")
