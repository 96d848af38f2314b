"""``coco_instances``: COCO 2017 instance segmentation as a TFDS builder (with masks).

TFDS' own ``coco/2017`` keeps boxes only, so this builder reads the official
``instances_{train,val}2017.json`` with pycocotools and stores one mask per object.

* Splits: ``train`` (train2017, 118,287 images) and ``validation`` (val2017, 5,000).
* Classes: COCO's 80 categories, ids 1..90 with gaps, mapped to 0..79 in id order
  (:data:`COCO_CATEGORIES`); names are COCO's own.
* Objects: ``bbox`` (from COCO's xywh pixel box, clipped to the image), ``label``,
  ``is_crowd`` and ``mask`` (pycocotools ``annToMask``: polygons, RLE and crowd RLE).
  Crowd objects are *kept* with ``is_crowd=True`` (evaluation and the semantic map need
  them); the input pipeline drops them from the ``instances`` targets (:func:`to_common`).
* Annotations without ``bbox``/``segmentation``/``category_id``, with a category id that is
  not COCO's or with a box of zero width or height are skipped and counted in one warning.
* Images without annotations are kept (an empty ``objects`` sequence): they are negatives
  for detectors, and the val split must keep all 5,000 images for COCO evaluation.

Semantic view (:func:`to_common`): 0 = background, ``label + 1`` where an object covers a
pixel (a later annotation wins where objects overlap), ``ignore_label`` on crowd regions not
covered by a non-crowd object; hence 81 semantic classes.

Offline use: pass ``manual_dir`` holding the extracted official layout
``train2017/*.jpg``, ``val2017/*.jpg``, ``annotations/instances_{train,val}2017.json``.
Preparing train2017 reads the 450 MB JSON into memory (several GB of RAM).
"""

from __future__ import annotations

import collections
import json
import os
from typing import Optional

import numpy as np
from absl import logging
import tensorflow_datasets as tfds
from etils import epath

from seg_jax.data import _tf  # noqa: F401  (configures TensorFlow before TFDS uses it)

COCO_URL = "http://images.cocodataset.org"
COCO_URLS = {
    "train": f"{COCO_URL}/zips/train2017.zip",
    "val": f"{COCO_URL}/zips/val2017.zip",
    "annotations": f"{COCO_URL}/annotations/annotations_trainval2017.zip",
}
_SPLITS = {"train": "train2017", "validation": "val2017"}

COCO_CATEGORIES = (  # (COCO category id, name), in id order = contiguous label order
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
COCO_CLASS_NAMES = tuple(name for _, name in COCO_CATEGORIES)
COCO_ID_TO_LABEL = {cat_id: i for i, (cat_id, _) in enumerate(COCO_CATEGORIES)}


def check_categories(categories: list[dict]) -> None:
  """The JSON's categories must agree with :data:`COCO_CATEGORIES` (ids and names)."""
  known = dict(COCO_CATEGORIES)
  for cat in categories:
    if known.get(cat["id"]) != cat["name"]:
      raise ValueError(f"COCO category id {cat['id']} ({cat['name']!r}) is not the official "
                       f"2017 category with that id ({known.get(cat['id'])!r})")


def skip_reason(ann: dict) -> Optional[str]:
  """Why an annotation cannot be used (missing field, unknown category, degenerate box)."""
  missing = [k for k in ("id", "image_id", "category_id", "bbox", "segmentation")
             if k not in ann]
  if missing:
    return f"missing {'/'.join(missing)}"
  if ann["category_id"] not in COCO_ID_TO_LABEL:
    return "unknown category id"
  box = ann["bbox"]
  if len(box) != 4 or not (float(box[2]) > 0 and float(box[3]) > 0):
    return "degenerate box"
  return None


def coco_bbox(xywh, height: int, width: int) -> np.ndarray:
  """COCO ``[x, y, w, h]`` pixels -> TFDS ``[ymin, xmin, ymax, xmax]`` in 0..1 (clipped)."""
  x, y, w, h = (float(v) for v in xywh)
  box = np.array([y / height, x / width, (y + h) / height, (x + w) / width], np.float32)
  box = np.clip(box, 0.0, 1.0)
  box[2:] = np.maximum(box[2:], box[:2])
  return box


class CocoInstances(tfds.core.GeneratorBasedBuilder):
  """COCO 2017 instances: boxes, 80 contiguous labels, crowd flags and per-object masks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Extract train2017.zip, val2017.zip and annotations_trainval2017.zip (from {COCO_URL}) "
      "into manual_dir: train2017/, val2017/, annotations/instances_{train,val}2017.json.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="COCO 2017 instance segmentation with per-object masks.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image/id": tfds.features.Scalar(np.int64),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=COCO_CLASS_NAMES),
                "is_crowd": tfds.features.Scalar(np.bool_),
                "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            }),
        }),
        homepage="https://cocodataset.org/",
    )

  def _roots(self, dl_manager) -> dict[str, epath.Path]:
    """Folder holding ``train2017/``, ``val2017/``, ``annotations/`` per part."""
    try:
      manual = dl_manager.manual_dir
    except (AssertionError, ValueError):
      manual = None  # no (or empty) manual_dir
    if manual is not None and (manual / "annotations").exists():
      return {part: manual for part in COCO_URLS}
    paths = dl_manager.download_and_extract(COCO_URLS)
    return {part: epath.Path(path) for part, path in paths.items()}

  def _split_generators(self, dl_manager):
    roots = self._roots(dl_manager)
    out = {}
    for split, folder in _SPLITS.items():
      part = "train" if split == "train" else "val"
      annotations = roots["annotations"] / "annotations" / f"instances_{folder}.json"
      images = roots[part] / folder
      for path in (annotations, images):
        if not path.exists():
          raise ValueError(f"{path} not found: not the official COCO 2017 layout")
      out[split] = self._generate_examples(annotations, images)
    return out

  def _generate_examples(self, annotations: epath.Path, images: epath.Path):
    from pycocotools import coco as coco_api  # local: only needed while preparing
    data = json.loads(annotations.read_text())
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
      raise ValueError(f"{annotations}: not a COCO annotation file (no {', '.join(missing)})")
    # Unusable annotations are dropped before pycocotools indexes them (it would KeyError).
    skipped = collections.Counter(filter(None, map(skip_reason, data["annotations"])))
    data["annotations"] = [a for a in data["annotations"] if skip_reason(a) is None]
    coco = coco_api.COCO()
    coco.dataset = data
    coco.createIndex()
    check_categories(coco.loadCats(coco.getCatIds()))
    for image_id in sorted(coco.getImgIds()):
      info = coco.loadImgs(image_id)[0]
      height, width = int(info["height"]), int(info["width"])
      anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
      objects = {"bbox": [], "label": [], "is_crowd": [], "mask": []}
      for ann in anns:
        mask = coco.annToMask(ann)
        if mask.shape != (height, width):
          raise ValueError(f"annotation {ann['id']}: mask {mask.shape} != image "
                           f"{(height, width)}")
        objects["bbox"].append(coco_bbox(ann["bbox"], height, width))
        objects["label"].append(COCO_ID_TO_LABEL[ann["category_id"]])
        objects["is_crowd"].append(bool(ann.get("iscrowd", 0)))
        objects["mask"].append(mask.astype(np.uint8)[..., None])
      if not anns:
        objects["bbox"] = np.zeros((0, 4), np.float32)
      yield image_id, {
          "image": os.fspath(images / info["file_name"]),  # JPEG bytes stored as they are
          "image/id": image_id,
          "objects": objects,
      }
    if skipped:
      logging.warning("%s: skipped %d annotations (%s)", os.fspath(annotations),
                      sum(skipped.values()),
                      ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())))


def to_common(example: dict, ignore_label: int = 255) -> dict:
  """TF graph: COCO features -> ``segmentation`` (H,W,1) + non-crowd ``objects`` (see top)."""
  from seg_jax.data._tf import tf
  shape = tf.shape(example["image"])
  height, width = shape[0], shape[1]
  objects = example["objects"]
  # reshape also fixes the spatial dims of an empty sequence (no annotations)
  masks = tf.reshape(tf.cast(objects["mask"], tf.int32), [-1, height, width])
  labels = tf.cast(objects["label"], tf.int32)
  crowd = tf.cast(objects["is_crowd"], tf.bool)
  keep = tf.logical_not(crowd)
  masks_kept, labels_kept = tf.boolean_mask(masks, keep), tf.boolean_mask(labels, keep)
  count = tf.shape(labels_kept)[0]
  # index (1-based) of the last object covering each pixel, 0 where none does
  order = tf.range(1, count + 1)[:, None, None] * tf.cast(masks_kept > 0, tf.int32)
  top = tf.reduce_max(tf.concat([tf.zeros([1, height, width], tf.int32), order], 0), axis=0)
  semantic = tf.gather(tf.concat([[0], labels_kept + 1], 0), top)
  crowd_region = tf.reduce_any(tf.boolean_mask(masks, crowd) > 0, axis=0)
  semantic = tf.where(crowd_region & tf.equal(semantic, 0), ignore_label, semantic)
  return {
      "image": example["image"],
      "segmentation": semantic[..., None],
      "objects": {"mask": masks_kept[..., None], "label": labels_kept},
  }
