"""``coco_instances`` read offline (manual_dir) from a tiny dataset in the official layout."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import coco as coco_api

from seg_jax.data import builders, coco, pipeline

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
              {"id": 90, "name": "toothbrush"}]
EXPECTED_LABEL = {1: 0, 3: 2, 90: 79}
IMAGES = {  # split -> [(id, height, width)]
    "train2017": [(7, 24, 32), (9, 20, 20), (12, 16, 24)],  # 12: no annotations
    "val2017": [(3, 24, 32), (5, 16, 16)],  # 5: no annotations
}


def _crowd_rle(height, width, top, left, bottom, right):
  """Uncompressed (list-of-counts) column-major RLE of a rectangle, as COCO stores crowds."""
  mask = np.zeros((height, width), np.uint8)
  mask[top:bottom, left:right] = 1
  flat = mask.flatten(order="F")
  counts, value, run = [], 0, 0
  for v in flat:
    if v == value:
      run += 1
    else:
      counts.append(run)
      value, run = v, 1
  counts.append(run)
  return {"counts": [int(c) for c in counts], "size": [height, width]}


def _annotations(split):
  anns = []
  if split == "train2017":
    anns.append({"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 60.0,
                 "bbox": [2.0, 3.0, 10.0, 12.0],
                 "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 15.0, 2.0, 15.0]]})
    anns.append({"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1, "area": 48.0,
                 "bbox": [20.0, 10.0, 8.0, 6.0],
                 "segmentation": _crowd_rle(24, 32, 10, 20, 16, 28)})
    anns.append({"id": 3, "image_id": 9, "category_id": 90, "iscrowd": 0, "area": 40.0,
                 "bbox": [4.5, 2.0, 11.0, 14.5],
                 "segmentation": [[4.5, 2.0, 15.5, 9.0, 4.5, 16.5]]})
  else:
    anns.append({"id": 4, "image_id": 3, "category_id": 3, "iscrowd": 0, "area": 80.0,
                 "bbox": [5.0, 4.0, 16.0, 10.0],
                 "segmentation": [[5.0, 4.0, 21.0, 4.0, 21.0, 14.0, 5.0, 14.0]]})
    anns.append({"id": 5, "image_id": 3, "category_id": 90, "iscrowd": 0, "area": 20.0,
                 "bbox": [24.0, 16.0, 6.0, 6.0],
                 "segmentation": [[24.0, 16.0, 30.0, 16.0, 30.0, 22.0, 24.0, 22.0]]})
  return anns


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco_manual")
  (root / "annotations").mkdir()
  for split, images in IMAGES.items():
    (root / split).mkdir()
    entries = []
    for image_id, h, w in images:
      ys, xs = np.mgrid[:h, :w]
      pixels = np.stack([ys * 9, xs * 7, np.full((h, w), image_id * 10)], -1).astype(np.uint8)
      name = f"{image_id:012d}.jpg"
      Image.fromarray(pixels).save(root / split / name, format="JPEG")
      entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
    data = {"images": entries, "annotations": _annotations(split), "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
  return root


@pytest.fixture(scope="module")
def data_config(manual_dir, tmp_path_factory):
  return pipeline.default_data_config(
      "coco_instances", data_dir=str(tmp_path_factory.mktemp("coco_tfds")),
      manual_dir=str(manual_dir), task="instances", image_size=32, max_instances=4,
      shuffle_buffer=4, prefetch=1)


def test_examples_match_pycocotools(data_config, manual_dir):
  builder = builders.get_builder(data_config)
  assert builder.info.features["objects"]["label"].names == list(coco.COCO_CLASS_NAMES)
  for split, folder in (("train", "train2017"), ("validation", "val2017")):
    api = coco_api.COCO(str(manual_dir / "annotations" / f"instances_{folder}.json"))
    examples = {int(ex["image/id"]): ex
                for ex in builder.as_dataset(split=split).as_numpy_iterator()}
    assert sorted(examples) == sorted(i for i, _, _ in IMAGES[folder])  # empty images kept
    for image_id, h, w in IMAGES[folder]:
      ex, anns = examples[image_id], api.loadAnns(api.getAnnIds(imgIds=image_id))
      assert ex["image"].shape == (h, w, 3)
      objects = ex["objects"]
      assert len(objects["label"]) == len(anns)
      for k, ann in enumerate(anns):
        np.testing.assert_array_equal(objects["mask"][k, ..., 0], api.annToMask(ann))
        assert objects["label"][k] == EXPECTED_LABEL[ann["category_id"]]
        assert bool(objects["is_crowd"][k]) == bool(ann["iscrowd"])
        x, y, bw, bh = ann["bbox"]
        np.testing.assert_allclose(objects["bbox"][k], [y / h, x / w, (y + bh) / h, (x + bw) / w],
                                   atol=1e-6)


def test_crowd_mask_is_the_rle_rectangle(data_config):
  builder = builders.get_builder(data_config)
  ex = next(e for e in builder.as_dataset(split="train").as_numpy_iterator()
            if int(e["image/id"]) == 7)
  expected = np.zeros((24, 32), np.uint8)
  expected[10:16, 20:28] = 1
  np.testing.assert_array_equal(ex["objects"]["mask"][1, ..., 0], expected)


def test_instances_batches(data_config, manual_dir):
  batch = next(pipeline.get_dataset(data_config, split="validation", train=False,
                                    global_batch_size=2))
  assert batch["image"].shape == (2, 32, 32, 3) and batch["label"].shape == (2, 32, 32)
  assert batch["boxes"].shape == (2, 4, 4) and batch["instance_masks"].shape == (2, 4, 32, 32)
  assert batch["classes"].dtype == np.int32 and batch["box_valid"].dtype == bool
  api = coco_api.COCO(str(manual_dir / "annotations" / "instances_val2017.json"))
  # Image 3 (24x32) fits 32 px unscaled, so its masks are exact; image 5 has no objects.
  first = int(np.argmax(batch["box_valid"].any(axis=1)))
  second = 1 - first
  np.testing.assert_array_equal(batch["box_valid"][first], [True, True, False, False])
  np.testing.assert_array_equal(batch["classes"][first, :2], [2, 79])
  for k, ann in enumerate(api.loadAnns(api.getAnnIds(imgIds=3))):
    mask = api.annToMask(ann)
    np.testing.assert_array_equal(batch["instance_masks"][first, k, :24], mask)
    ys, xs = np.nonzero(mask)
    np.testing.assert_array_equal(batch["boxes"][first, k],
                                  [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.all(batch["label"][first, :24][mask > 0] == EXPECTED_LABEL[ann["category_id"]] + 1)
  assert not batch["box_valid"][second].any()  # the image without annotations
  assert np.all(batch["label"][first, 24:] == 255)  # padding is ignored


def test_train_drops_crowd(data_config):
  batches = pipeline.get_dataset(data_config, split="train", train=True, global_batch_size=2,
                                 seed=1)
  for _ in range(3):
    batch = next(batches)
    assert batch["image"].shape == (2, 32, 32, 3)
    assert batch["instance_masks"].shape == (2, 4, 32, 32)
    valid = batch["box_valid"]
    # only non-crowd person (0) and toothbrush (79) objects can appear
    assert set(batch["classes"][valid].tolist()) <= {0, 79}
    assert valid.sum(axis=1).max() <= 1
    assert set(np.unique(batch["label"]).tolist()) <= {0, 1, 80, 255}


def test_semantic_task_and_info(data_config):
  cfg = pipeline.default_data_config("coco_instances", data_dir=data_config.data_dir,
                                     manual_dir=data_config.manual_dir, image_size=32)
  assert cfg.num_classes == 81 and cfg.max_instances == 100
  batch = next(pipeline.get_dataset(cfg, split="train", train=False, global_batch_size=3))
  # image 7 (24x32) is unscaled: padding from row 24 (9 -> 32x32, 12 -> 21x32)
  padding = batch["label"] == 255
  is7 = padding[:, 24:].all(axis=(1, 2)) & ~padding[:, 22].all(axis=1)
  assert is7.sum() == 1
  image7 = batch["label"][int(np.argmax(is7))]
  assert np.all(image7[10:16, 20:28] == 255)  # crowd region is ignored
  assert np.all(image7[4:14, 3:11] == 1)  # person (label 0) -> semantic 1
  info = pipeline.dataset_info(cfg)
  assert info["num_classes"] == 81 and info["instance_class_names"][79] == "toothbrush"


def test_offline_error(tmp_path):
  cfg = pipeline.default_data_config("coco_instances", data_dir=str(tmp_path), download=False)
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    builders.get_builder(cfg)


def test_unknown_category_is_refused():
  with pytest.raises(ValueError, match="category id 12"):
    coco.check_categories([{"id": 12, "name": "street sign"}])


def test_coco_configs_load():
  from experiments.configs import detr_coco, mask_rcnn_coco
  config = mask_rcnn_coco.get_config()
  assert config.data.name == "coco_instances" and config.model.num_classes == 80
  assert config.data.image_size % 32 == 0 and config.model.frozen_bn
  assert tuple(config.schedule.boundaries) == (60000, 80000) and config.batch_size == 16
  from seg_jax.training import optim
  schedule = optim.make_schedule(config.schedule, 0.02, config.num_train_steps)
  rates = [float(schedule(s)) for s in (0, 500, 1000, 59999, 60000, 79999, 80000, 89999)]
  np.testing.assert_allclose(rates, [0, 0.01, 0.02, 0.02, 2e-3, 2e-3, 2e-4, 2e-4], rtol=1e-5)
  detr = detr_coco.get_config()
  assert detr.data.name == "coco_instances" and detr.model.num_classes == 80


def test_mask_rcnn_coco_runlocal_train_step(data_config):
  """The runlocal model (ResNet-50 at 1/8 width) takes one train step on the tiny COCO."""
  import jax
  from experiments.configs import mask_rcnn_coco
  from seg_jax.training import loop
  config = mask_rcnn_coco.get_config("runlocal")
  config.data.update({"data_dir": data_config.data_dir, "manual_dir": data_config.manual_dir})
  config.batch_size = 2
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    setup = loop._Setup(config)  # pylint: disable=protected-access
    batch = next(setup.dataset(config.data.train_split, train=True))
    assert batch["image"].shape == (2, 64, 64, 3) and batch["boxes"].shape == (2, 8, 4)
    state = setup.init_state(batch)
    _, metrics = setup.runner.train(state, setup.runner.place_batch(batch))
    assert np.isfinite(float(setup.runner.host(metrics)["loss"]))
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


def test_unusable_annotations_are_named():
  good = {"id": 1, "image_id": 3, "category_id": 3, "bbox": [1, 2, 3, 4], "segmentation": []}
  assert coco.skip_reason(good) is None
  assert coco.skip_reason({k: v for k, v in good.items() if k != "bbox"}) == "missing bbox"
  assert coco.skip_reason(dict(good, category_id=12)) == "unknown category id"  # a COCO gap
  assert coco.skip_reason(dict(good, bbox=[1, 2, 0, 4])) == "degenerate box"
