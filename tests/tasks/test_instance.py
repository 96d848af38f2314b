"""Instance task: in-graph histogram AP equals pycocotools on hand-made detections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import metrics_coco
from seg_jax.metrics_coco import coco_evaluate
from seg_jax.tasks import instance


def _mask(box, size=32):
  m = np.zeros((size, size), np.uint8)
  x0, y0, x1, y1 = box
  m[y0:y1, x0:x1] = 1
  return m


def _case():
  gt_boxes = np.array([[[2, 2, 12, 12], [16, 16, 30, 28], [0, 0, 0, 0]],
                       [[4, 4, 20, 14], [0, 0, 0, 0], [0, 0, 0, 0]]], np.int32)
  batch = {"image": np.zeros((2, 32, 32, 3), np.float32),
           "boxes": gt_boxes.astype(np.float32),
           "classes": np.array([[0, 1, 0], [1, 0, 0]], np.int32),
           "box_valid": np.array([[True, True, False], [True, False, False]]),
           "instance_masks": np.stack([np.stack([_mask(b) for b in img]) for img in gt_boxes])}
  det_boxes = np.array([[[2, 2, 12, 12], [17, 16, 30, 27], [0, 20, 8, 30], [3, 2, 12, 11]],
                        [[4, 5, 20, 14], [4, 4, 19, 14], [0, 0, 0, 0], [0, 0, 0, 0]]],
                       np.int32)
  det = {"boxes": det_boxes.astype(np.float32),
         "scores": np.array([[0.95, 0.81, 0.62, 0.33], [0.91, 0.45, 0.0, 0.0]], np.float32),
         "classes": np.array([[0, 1, 1, 0], [1, 1, -1, -1]], np.int32),
         "valid": np.array([[True, True, True, True], [True, True, False, False]]),
         "masks": np.stack([np.stack([_mask(b) for b in img]) for img in det_boxes]).astype(bool)}
  # Make one mask imperfect so box and mask IoUs differ.
  det["masks"][0, 1, 16:20, 17:30] = False
  return batch, det


@pytest.mark.parametrize("kind,iou_type", [("box", "bbox"), ("mask", "segm")])
def test_histogram_ap_matches_pycocotools(kind, iou_type):
  batch, det = _case()
  stats = jax.jit(instance.instance_statistics, static_argnums=(2, 3))(
      jax.tree.map(jnp.asarray, det), jax.tree.map(jnp.asarray, batch), 2, 1000)
  ap = metrics_coco.average_precision(np.asarray(stats[f"{kind}_tp"]),
                                      np.asarray(stats[f"{kind}_fp"]),
                                      np.asarray(stats["num_gt"]))
  gts, dts = [], []
  for i in range(2):
    v = batch["box_valid"][i]
    gts.append({"boxes": batch["boxes"][i][v], "classes": batch["classes"][i][v],
                "masks": batch["instance_masks"][i][v]})
    k = det["valid"][i]
    dts.append({key: det[key][i][k] for key in ("boxes", "scores", "classes", "masks")})
  reference = coco_evaluate(gts, dts, iou_type)
  assert float(np.nanmean(ap)) == pytest.approx(reference["AP"], abs=1e-6)
  assert float(np.nanmean(ap[0])) == pytest.approx(reference["AP50"], abs=1e-6)
