"""The in-graph, summable box AP of the detection task vs pycocotools' COCOeval."""

import contextlib
import io

import jax
import numpy as np
import pytest

from seg_jax.tasks import detection

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NUM_CLASSES, SIZE, QUERIES, MAX_GT = 3, 64, 12, 5


def _random_case(rng, batch=6):
  gt = np.zeros((batch, MAX_GT, 4), np.float32)
  gt_cls = rng.integers(0, NUM_CLASSES, (batch, MAX_GT)).astype(np.int32)
  valid = rng.random((batch, MAX_GT)) < 0.7
  xy = rng.uniform(0, 40, (batch, MAX_GT, 2))
  gt[..., :2], gt[..., 2:] = xy, xy + rng.uniform(6, 24, (batch, MAX_GT, 2))
  # Detections: jittered copies of ground truth (some with the wrong class) plus clutter.
  boxes = rng.uniform(0, 40, (batch, QUERIES, 4)).astype(np.float32)
  boxes[..., 2:] = boxes[..., :2] + rng.uniform(6, 24, (batch, QUERIES, 2))
  classes = rng.integers(0, NUM_CLASSES, (batch, QUERIES)).astype(np.int32)
  boxes[:, :MAX_GT] = gt + rng.normal(0, 2.0, gt.shape)
  classes[:, :MAX_GT] = np.where(rng.random((batch, MAX_GT)) < 0.8, gt_cls, classes[:, :MAX_GT])
  # Distinct scores, at least one histogram bin apart, so ranking is exact.
  scores = rng.permutation(batch * QUERIES).reshape(batch, QUERIES) / (batch * QUERIES) + 1e-4
  order = np.argsort(-scores, axis=1)
  take = lambda x: np.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)
  det = {"scores": take(scores).astype(np.float32), "classes": take(classes), "boxes": take(boxes)}
  batch_dict = {"image": np.zeros((batch, SIZE, SIZE, 3), np.float32), "boxes": gt,
                "classes": gt_cls, "box_valid": valid,
                "valid": np.array([True] * (batch - 1) + [False])}
  return det, batch_dict


def _coco_ap(det, batch):
  images, annotations, results = [], [], []
  for i in np.flatnonzero(batch["valid"]):
    images.append({"id": int(i), "width": SIZE, "height": SIZE})
    for box, cls, ok in zip(batch["boxes"][i], batch["classes"][i], batch["box_valid"][i]):
      if ok:
        x1, y1, x2, y2 = map(float, box)
        annotations.append({"id": len(annotations) + 1, "image_id": int(i),
                            "category_id": int(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    for box, cls, score in zip(det["boxes"][i], det["classes"][i], det["scores"][i]):
      x1, y1, x2, y2 = map(float, box)
      results.append({"image_id": int(i), "category_id": int(cls) + 1,
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1} for c in range(NUM_CLASSES)]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats  # [AP, AP50, AP75, ...]


def test_binned_box_ap_equals_pycocotools():
  det, batch = _random_case(np.random.default_rng(0))
  stats = jax.jit(detection.detection_statistics, static_argnums=(2, 3))(
      det, batch, NUM_CLASSES, 1000)
  # Summability: statistics of two halves add up to those of the whole batch.
  halves = [jax.tree.map(lambda x, s=s: x[s], (det, batch)) for s in (slice(0, 3), slice(3, 6))]
  summed = jax.tree.map(lambda a, b: a + b, *[
      detection.detection_statistics(d, b, NUM_CLASSES, 1000) for d, b in halves])
  for key in stats:
    np.testing.assert_array_equal(stats[key], summed[key])
  scores = detection.finalize_eval(jax.tree.map(np.asarray, stats), {}, None)
  coco = _coco_ap(det, batch)
  np.testing.assert_allclose(scores["box_ap"], coco[0], atol=1e-6)
  np.testing.assert_allclose(scores["box_ap50"], coco[1], atol=1e-6)
  np.testing.assert_allclose(scores["box_ap75"], coco[2], atol=1e-6)
  assert 0.1 < scores["box_ap50"] < 1.0  # a non-trivial case
