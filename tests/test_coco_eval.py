"""Official-style COCO evaluation on fake COCO files in the official layout.

Predictions made at the pipeline's (resized) input scale go through ``results_for_batch``
back to original pixels; our 12 numbers must equal pycocotools run directly on the results
file we wrote, with crowd regions (an uncompressed RLE) and a compressed RLE annotation.
"""

import contextlib
import io
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_jax import coco_eval
from seg_jax.data import pipeline
from seg_jax.models.roi_heads import paste_masks

IMAGES = [(3, 24, 32), (5, 16, 16), (8, 30, 20)]  # (id, height, width); 5: no annotations
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
              {"id": 90, "name": "toothbrush"}]


def _rect(height, width, top, left, bottom, right):
  mask = np.zeros((height, width), np.uint8)
  mask[top:bottom, left:right] = 1
  return mask


def _uncompressed_rle(mask):
  flat = mask.flatten(order="F")
  changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
  counts = np.diff(np.concatenate([[0], changes]))
  return {"counts": [int(c) for c in counts], "size": list(mask.shape)}


def _annotations():
  car = _rect(24, 32, 4, 5, 14, 21)
  compressed = mask_utils.encode(np.asfortranarray(_rect(30, 20, 10, 2, 26, 12)))
  compressed["counts"] = compressed["counts"].decode("ascii")
  return [
      {"id": 1, "image_id": 3, "category_id": 3, "iscrowd": 0, "area": float(car.sum()),
       "bbox": [5.0, 4.0, 16.0, 10.0],
       "segmentation": [[5.0, 4.0, 21.0, 4.0, 21.0, 14.0, 5.0, 14.0]]},
      {"id": 2, "image_id": 3, "category_id": 1, "iscrowd": 1, "area": 48.0,
       "bbox": [22.0, 14.0, 8.0, 6.0], "segmentation": _uncompressed_rle(
           _rect(24, 32, 14, 22, 20, 30))},
      {"id": 3, "image_id": 8, "category_id": 90, "iscrowd": 0, "area": 160.0,
       "bbox": [2.0, 10.0, 10.0, 16.0], "segmentation": compressed},
      {"id": 4, "image_id": 8, "category_id": 1, "iscrowd": 0, "area": 24.0,
       "bbox": [13.0, 2.0, 4.0, 6.0],
       "segmentation": [[13.0, 2.0, 17.0, 2.0, 17.0, 8.0, 13.0, 8.0]]},
  ]


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco_manual")
  (root / "annotations").mkdir()
  for split in ("train2017", "val2017"):
    (root / split).mkdir()
    entries = []
    for image_id, h, w in IMAGES:
      pixels = np.full((h, w, 3), image_id * 20, np.uint8)
      name = f"{image_id:012d}.jpg"
      Image.fromarray(pixels).save(root / split / name, format="JPEG")
      entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
    data = {"images": entries, "annotations": _annotations(), "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
  config = pipeline.default_data_config(
      "coco_instances", data_dir=str(tmp_path_factory.mktemp("coco_tfds")),
      manual_dir=str(root), task="instances", image_size=16, max_instances=4,
      shuffle_buffer=4, prefetch=1)
  return root / "annotations" / "instances_val2017.json", config


def _oracle(batch):
  """Detections = the (resized) ground truth, plus a box on the crowd and a plain miss."""
  valid = batch["box_valid"]
  n, m = valid.shape
  size = batch["image"].shape[1]
  extra = np.array([[11.0, 7.0, 15.0, 10.0], [0.0, 0.0, 3.0, 3.0]], np.float32)
  boxes = np.concatenate([batch["boxes"], np.broadcast_to(extra, (n, 2, 4))], 1)
  masks = np.concatenate([batch["instance_masks"].astype(np.float32),
                          np.zeros((n, 2, size, size), np.float32)], 1)
  for k, (x0, y0, x1, y1) in enumerate(extra.astype(int)):
    masks[:, m + k, y0:y1, x0:x1] = 1.0
  scores = np.concatenate([np.linspace(0.9, 0.6, m)[None].repeat(n, 0),
                           np.full((n, 2), [0.5, 0.4])], 1).astype(np.float32)
  classes = np.concatenate([batch["classes"], np.zeros((n, 2), np.int32)], 1)
  det_valid = np.concatenate([valid, np.ones((n, 2), bool)], 1)
  return {"boxes": boxes, "scores": scores, "classes": classes, "valid": det_valid,
          "mask_probs": masks}


def _pycocotools(annotation_file, results_file, iou_type):
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(annotation_file))
    evaluator = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats


def test_twelve_numbers_equal_pycocotools_on_our_results_file(coco_files, tmp_path):
  annotation_file, config = coco_files
  batches = list(pipeline.get_dataset(config, split="validation", train=False,
                                      global_batch_size=2))
  ids = [int(i) for b in batches for i, v in zip(b["image_id"], b["valid"]) if v]
  assert sorted(ids) == [3, 5, 8]  # official image ids, empty image kept
  sizes = {int(i): tuple(s) for b in batches for i, s in zip(b["image_id"], b["orig_size"])}
  assert sizes[3] == (24, 32) and sizes[8] == (30, 20)
  output = tmp_path / "results.json"
  scores = coco_eval.evaluate_predictions(
      [(b, _oracle(b)) for b in batches], config, 80, str(annotation_file), str(output))
  results = json.loads(output.read_text())
  assert {r["category_id"] for r in results} <= {1, 3, 90}  # COCO's id space
  for iou_type in ("bbox", "segm"):
    reference = _pycocotools(annotation_file, output, iou_type)
    ours = [scores[iou_type][name] for name in coco_eval.STAT_NAMES]
    np.testing.assert_array_equal(np.where(reference < 0, np.nan, reference), ours)
  # Mapped back to original pixels, the resized ground truth still matches at IoU 0.5, and
  # the detection on the crowd region is ignored (not a false positive), so only the
  # lowest-scored miss is wrong: AP50 is perfect.
  assert scores["bbox"]["AP50"] == pytest.approx(1.0)
  car = next(r for r in results if r["image_id"] == 3 and r["category_id"] == 3)
  np.testing.assert_allclose(car["bbox"], [5, 4, 16, 10], atol=1.01)


def test_bad_annotation_files_and_ids_give_one_line_errors(coco_files, tmp_path):
  annotation_file, _ = coco_files
  broken = tmp_path / "broken.json"
  broken.write_text(json.dumps({"images": [], "annotations": []}))
  with pytest.raises(ValueError, match="lacks categories"):
    coco_eval.evaluate_results(str(broken), [])
  with pytest.raises(ValueError, match="image_id 77"):
    coco_eval.evaluate_results(str(annotation_file), [
        {"image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
  with pytest.raises(ValueError, match="category_id 2"):
    coco_eval.evaluate_results(str(annotation_file), [
        {"image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}])


def test_numpy_paste_equals_the_model_paste():
  rng = np.random.default_rng(0)
  probs = rng.uniform(size=(3, 7, 7)).astype(np.float32)
  boxes = np.array([[2.0, 3.5, 20.0, 11.0], [0.0, 0.0, 24.0, 16.0], [10.2, 1.1, 12.9, 3.3]],
                   np.float32)
  want = np.asarray(paste_masks(jnp.asarray(probs), jnp.asarray(boxes), (16, 24)))
  np.testing.assert_allclose(coco_eval.paste_masks(probs, boxes, 16, 24), want, atol=1e-5)


def test_shapes_ground_truth_json_matches_the_pipeline(tmp_path):
  config = pipeline.default_data_config("shapes", task="instances")
  path = tmp_path / "gt.json"
  data = coco_eval.ground_truth_json(config, "validation[:6]", str(path))
  assert json.loads(path.read_text()) == data
  batch = next(pipeline.get_dataset(dict_config(config, "validation[:6]"), split="validation[:6]",
                                    train=False, global_batch_size=6))
  assert [image["id"] for image in data["images"]] == list(batch["image_id"])
  per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=6)
  np.testing.assert_array_equal(per_image, batch["box_valid"].sum(1))
  first = [a for a in data["annotations"] if a["image_id"] == 0]
  for ann, box in zip(first, batch["boxes"][0]):
    x0, y0, x1, y1 = box
    assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert ann["area"] == mask_utils.area(ann["segmentation"])


def dict_config(config, split):
  config = config.copy_and_resolve_references()
  config.eval_split = split
  return config
