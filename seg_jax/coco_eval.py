"""Official-style COCO evaluation: results JSON in original pixels, scored by pycocotools.

The loop's in-graph AP (``seg_jax.metrics_coco``) is an approximation at the network's
input resolution. This module does what the COCO server does:

1. Predictions of each eval batch are mapped back to the original image
   (:func:`results_for_batch`): boxes scaled by ``orig_size / resized_size`` and clipped,
   Mask R-CNN's box-relative masks pasted at the original resolution (other masks resized),
   category ids in the annotation file's id space, boxes as ``[x, y, w, h]``, masks as RLE
   (``pycocotools.mask.encode``). At most ``max_detections`` (100) per image.
2. The results are written as the official results JSON (:func:`write_json`, atomic).
3. pycocotools ``COCOeval`` scores it against an annotation file (for COCO the official
   ``instances_val2017.json``; crowd regions are used as COCO uses them) and the 12
   standard numbers are returned for ``bbox`` and ``segm`` (:func:`evaluate_results`).

For datasets without an official annotation file (``shapes``), :func:`ground_truth_json`
writes one in COCO format from the dataset itself (image id = position in the split).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_jax.data import builders, coco
from seg_jax.metrics_coco import STAT_NAMES

IOU_TYPES = ("bbox", "segm")
MASK_KEYS = ("mask_box_probs", "mask_probs", "masks")  # prediction keys that carry masks


def category_ids(data_name: str, num_classes: int) -> list[int]:
  """COCO category id of each 0-based class: COCO's own ids, else ``class + 1``."""
  if data_name == "coco_instances":
    return [cat_id for cat_id, _ in coco.COCO_CATEGORIES]
  return list(range(1, num_classes + 1))


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int,
                width: int) -> np.ndarray:
  """``(D, S, S)`` box-relative probabilities -> ``(D, H, W)`` at any image size.

  The numpy twin of ``seg_jax.models.roi_heads.paste_masks`` (bilinear, zero padding,
  ``grid_sample(align_corners=False)`` semantics), for original image sizes that vary.
  """
  size = mask_probs.shape[-1]

  def axis_weights(lo, hi, n):
    centres = np.arange(n, dtype=np.float64) + 0.5
    u = (centres[None, :] - lo[:, None]) / np.maximum(hi - lo, 1e-6)[:, None] * size - 0.5
    return np.maximum(0.0, 1.0 - np.abs(u[:, :, None] - np.arange(size)[None, None, :]))

  boxes = np.asarray(boxes, np.float64)
  wy = axis_weights(boxes[:, 1], boxes[:, 3], height)
  wx = axis_weights(boxes[:, 0], boxes[:, 2], width)
  return np.einsum("dys,dst,dxt->dyx", wy, np.asarray(mask_probs, np.float64), wx)


def _resize_masks(probs: np.ndarray, resized: Sequence[int], orig: Sequence[int]) -> np.ndarray:
  """Input-resolution masks ``(D, H', W')`` -> original size (crop the padding, bilinear)."""
  crop = np.asarray(probs, np.float64)[:, :resized[0], :resized[1]]

  def axis(n_out, n_in):  # pixel-centre bilinear interpolation matrix (n_out, n_in)
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n_in)[None, :]))

  return np.einsum("yh,dhw,xw->dyx", axis(orig[0], resized[0]), crop, axis(orig[1], resized[1]))


def _rle(mask: np.ndarray) -> dict:
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  rle["counts"] = rle["counts"].decode("ascii")
  return rle


def results_for_batch(batch: dict, predictions: dict, category_of: Sequence[int], *,
                      max_detections: int = 100, mask_threshold: float = 0.5) -> list[dict]:
  """COCO result dicts of one eval batch (padding examples skipped), in original pixels.

  ``batch`` needs ``image_id``, ``orig_size`` and ``resized_size``; ``predictions`` holds
  score-sorted ``boxes``, ``scores``, ``classes`` (+ ``valid``) and optionally
  ``mask_box_probs`` (pasted at the original size), ``mask_probs`` or ``masks``.
  """
  for key in ("image_id", "orig_size", "resized_size"):
    if key not in batch:
      raise ValueError(f"eval batch has no {key!r}: use the instances data task of "
                       f"seg_jax.data (batch keys: {sorted(batch)})")
  results = []
  example_valid = np.asarray(batch.get("valid", np.ones(len(batch["image_id"]), bool)), bool)
  for i in np.flatnonzero(example_valid):
    image_id = int(batch["image_id"][i])
    orig, resized = [int(v) for v in batch["orig_size"][i]], [int(v) for v in
                                                              batch["resized_size"][i]]
    keep = np.ones(np.shape(predictions["scores"][i]), bool)
    if "valid" in predictions:
      keep &= np.asarray(predictions["valid"][i], bool)
    keep = np.flatnonzero(keep)[:max_detections]
    if not len(keep):
      continue
    scale = np.array([orig[1] / resized[1], orig[0] / resized[0]] * 2)
    boxes = np.asarray(predictions["boxes"][i], np.float64)[keep] * scale
    boxes = np.clip(boxes, 0.0, [orig[1], orig[0], orig[1], orig[0]])
    masks = None
    if "mask_box_probs" in predictions:
      masks = paste_masks(np.asarray(predictions["mask_box_probs"][i])[keep], boxes, *orig)
    elif "mask_probs" in predictions or "masks" in predictions:
      probs = np.asarray(predictions.get("mask_probs", predictions.get("masks"))[i])[keep]
      masks = _resize_masks(probs.astype(np.float64), resized, orig)
    scores = np.asarray(predictions["scores"][i])[keep]
    classes = np.asarray(predictions["classes"][i])[keep]
    for j, (box, score, cls) in enumerate(zip(boxes, scores, classes)):
      if not 0 <= int(cls) < len(category_of):
        raise ValueError(f"prediction class {int(cls)} outside 0..{len(category_of) - 1}")
      result = {"image_id": image_id, "category_id": int(category_of[int(cls)]),
                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                         float(box[3] - box[1])],
                "score": float(score)}
      if masks is not None:
        result["segmentation"] = _rle(masks[j] > mask_threshold)
      results.append(result)
  return results


def write_json(path: str, data: Any) -> None:
  """Writes JSON atomically (temporary file in the same directory, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temp = tempfile.mkstemp(dir=directory, suffix=".tmp")
  try:
    with os.fdopen(handle, "w") as f:
      json.dump(data, f)
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise


def ground_truth_json(data_config, split: str, path: str) -> dict:
  """Writes the ``split`` of a TFDS instances dataset (e.g. ``shapes``) as a COCO file.

  Image ids are positions in the split as the pipeline reads it (unshuffled); annotations
  have RLE masks, mask-tight ``[x, y, w, h]`` boxes (max exclusive), mask areas, no crowds;
  category ids are ``class + 1``. Returns the dataset dict.
  """
  spec = builders.dataset_spec(data_config.name)
  builder = builders.get_builder(data_config)
  images, annotations = [], []
  for index, example in enumerate(builder.as_dataset(split=split, shuffle_files=False)
                                  .as_numpy_iterator()):
    height, width = example["image"].shape[:2]
    images.append({"id": index, "height": int(height), "width": int(width),
                   "file_name": f"{index}.png"})
    for mask, label in zip(example["objects"]["mask"], example["objects"]["label"]):
      mask = mask[..., 0] > 0
      if not mask.any():
        continue
      ys, xs = np.nonzero(mask)
      x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
      annotations.append({"id": len(annotations) + 1, "image_id": index,
                          "category_id": int(label) + 1, "iscrowd": 0,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()),
                          "segmentation": _rle(mask)})
  names = list(spec.instance_class_names)
  data = {"images": images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
  write_json(path, data)
  return data


def load_annotations(path: str) -> COCO:
  """pycocotools ``COCO`` of an annotation file, with one-line errors for bad files."""
  if not os.path.isfile(path):
    raise ValueError(f"annotation file not found: {path}")
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"annotation file {path} is not JSON: {e}") from e
  missing = [k for k in ("images", "annotations", "categories") if k not in data]
  if missing:
    raise ValueError(f"annotation file {path} lacks {', '.join(missing)}")
  for ann in data["annotations"]:
    absent = [k for k in ("id", "image_id", "category_id", "bbox", "area") if k not in ann]
    if absent:
      raise ValueError(f"annotation file {path}: annotation {ann.get('id')} lacks "
                       f"{', '.join(absent)}")
  api = COCO()
  api.dataset = data
  with contextlib.redirect_stdout(io.StringIO()):
    api.createIndex()
  return api


def evaluate_results(annotations: str, results: str | list[dict],
                     iou_types: Iterable[str] = IOU_TYPES) -> dict[str, dict[str, float]]:
  """The 12 COCO numbers (``AP`` ... ``ARl``) per IoU type of a results file or list.

  Results must refer to images and categories of the annotation file; ``segm`` is skipped
  when some result carries no segmentation; without any result every number is 0.
  pycocotools' -1 (no ground truth of that size)
  is returned as NaN.
  """
  gt = load_annotations(annotations)
  if isinstance(results, str):
    with open(results) as f:
      results = json.load(f)
  image_ids, cat_ids = set(gt.getImgIds()), set(gt.getCatIds())
  for result in results:
    if result["image_id"] not in image_ids:
      raise ValueError(f"result image_id {result['image_id']} is not in {annotations} "
                       f"(wrong --annotations for this dataset?)")
    if result["category_id"] not in cat_ids:
      raise ValueError(f"result category_id {result['category_id']} is not in {annotations}")
  scores = {}
  for iou_type in iou_types:
    if iou_type not in IOU_TYPES:
      raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if iou_type == "segm" and not all("segmentation" in r for r in results):
      continue
    if not results:
      scores[iou_type] = {name: 0.0 for name in STAT_NAMES}
      continue
    with contextlib.redirect_stdout(io.StringIO()):
      evaluator = COCOeval(gt, gt.loadRes(list(results)), iou_type)
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    scores[iou_type] = {name: (float("nan") if value < 0 else float(value))
                        for name, value in zip(STAT_NAMES, evaluator.stats)}
  return scores


def format_scores(scores: dict[str, dict[str, float]]) -> str:
  """One line per IoU type with all 12 numbers."""
  lines = []
  for iou_type, stats in scores.items():
    lines.append(f"{iou_type:>4}: " + "  ".join(f"{k} {v:.4f}" for k, v in stats.items()))
  return "\n".join(lines)


def evaluate_predictions(batches_and_predictions: Iterable[tuple[dict, dict]], data_config,
                         num_classes: int, annotations: str, output: str, *,
                         max_detections: int = 100, mask_threshold: float = 0.5,
                         split: Optional[str] = None) -> dict[str, dict[str, float]]:
  """Writes the results JSON of ``(batch, predictions)`` pairs to ``output`` and scores it.

  ``annotations`` is the official file; if it does not exist and the dataset is not COCO,
  it is written from the dataset's ``split`` first (:func:`ground_truth_json`).
  """
  category_of = category_ids(data_config.name, num_classes)
  results, iou_types = [], ["bbox"]
  for batch, predictions in batches_and_predictions:
    if "segm" not in iou_types and any(k in predictions for k in MASK_KEYS):
      iou_types.append("segm")
    results += results_for_batch(batch, predictions, category_of,
                                 max_detections=max_detections, mask_threshold=mask_threshold)
  write_json(output, results)
  if not os.path.exists(annotations):
    if data_config.name == "coco_instances":
      raise ValueError(f"annotation file not found: {annotations} (COCO needs the official "
                       f"annotations/instances_val2017.json)")
    ground_truth_json(data_config, split or data_config.eval_split, annotations)
  return evaluate_results(annotations, output, iou_types)
