"""DETR's augmentation (``resize='detr'``) and the padding mask of instance batches."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from experiments.configs import detr_coco
from seg_jax.data import augment, pipeline
from seg_jax.data._tf import tf
from seg_jax.training import loop

# The tiny COCO in the official layout (its ``manual_dir`` fixture), loaded by path: the
# test modules are not a package.
_spec = importlib.util.spec_from_file_location(
    "fake_coco", pathlib.Path(__file__).with_name("test_coco_dataset.py"))
fake_coco = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_coco)
manual_dir = fake_coco.manual_dir


def detr_get_size(height, width, size, max_size=None):
  """facebookresearch/detr datasets/transforms.py ``get_size_with_aspect_ratio`` (plain
  Python, (h, w) in and out)."""
  if max_size is not None:
    shorter, longer = float(min(height, width)), float(max(height, width))
    if longer / shorter * size > max_size:
      size = int(round(max_size * shorter / longer))
  if (width <= height and width == size) or (height <= width and height == size):
    return height, width
  if width < height:
    return int(size * height / width), size
  return size, int(size * width / height)


def test_detr_size_matches_detr_get_size():
  rng = np.random.default_rng(0)
  cases = [(480, 640, 800, 1333), (427, 640, 800, 1333), (640, 427, 800, 1333),
           (500, 500, 800, 1333), (333, 1000, 800, 1333), (375, 500, 600, None),
           (1, 7, 3, None), (2, 3, 2, 3)]
  cases += [(int(h), int(w), int(s), int(m)) for h, w, s, m in zip(
      rng.integers(20, 1500, 300), rng.integers(20, 1500, 300),
      rng.choice([400, 480, 512, 800], 300), rng.choice([600, 1000, 1333], 300))]
  for height, width, size, max_size in cases:
    got = augment.detr_size(height, width, size, max_size).numpy()
    assert tuple(got) == detr_get_size(height, width, size, max_size), (height, width, size)


def _coordinate_example(height=24, width=30):
  """Image channels = row, column, 0; three rectangular instances (label = instance + 1)."""
  rows, cols = np.mgrid[:height, :width].astype(np.float32)
  masks = np.zeros((3, height, width), np.int32)
  masks[0, 2:8, 3:10] = 1
  masks[1, 15:22, 20:28] = 1
  masks[2, 10:13, 0:4] = 1
  label = np.zeros((height, width), np.int32)
  for k in range(3):
    label[masks[k] > 0] = k + 1
  return {"image": tf.constant(np.stack([rows, cols, np.zeros_like(rows)], -1)),
          "label": tf.constant(label), "masks": tf.constant(masks),
          "classes": tf.constant([0, 1, 2], tf.int32)}


def test_random_size_crop_cuts_image_label_and_masks_together():
  example = _coordinate_example()
  stacked = augment._stack(example)  # pylint: disable=protected-access
  seen_sizes, seen_corners, dropped = set(), set(), 0
  for i in range(40):
    image, cut = augment.detr_random_size_crop(example["image"], stacked,
                                               tf.constant([i, 7], tf.int64), (8, 16))
    image, cut = image.numpy(), cut.numpy()
    top, left = int(image[0, 0, 0]), int(image[0, 0, 1])  # where the window came from
    h, w = cut.shape[:2]
    assert 8 <= h <= 16 and 8 <= w <= 16
    np.testing.assert_array_equal(cut, stacked.numpy()[top:top + h, left:left + w])
    rows, cols = np.mgrid[top:top + h, left:left + w]
    np.testing.assert_array_equal(image[..., 0], rows)
    np.testing.assert_array_equal(image[..., 1], cols)
    seen_sizes.add((h, w))
    seen_corners.add((top, left))
    # pack_instances drops the instances the window cut away; the rest keep their pixels
    out = augment._unstack(  # pylint: disable=protected-access
        example, tf.constant(cut), tf.constant(image), 255)
    packed = augment.pack_instances(out, max_instances=3)
    original = example["masks"].numpy()[:, top:top + h, left:left + w]
    kept = original.reshape(3, -1).any(1)
    assert int(packed["box_valid"].numpy().sum()) == int(kept.sum())
    dropped += int((~kept).sum())
    np.testing.assert_array_equal(packed["instance_masks"].numpy()[:kept.sum()], original[kept])
    for k, mask in enumerate(original[kept]):  # boxes of the cropped masks, max exclusive
      ys, xs = np.nonzero(mask)
      np.testing.assert_array_equal(packed["boxes"].numpy()[k],
                                    [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_array_equal(packed["classes"].numpy()[:kept.sum()], np.flatnonzero(kept))
  assert len(seen_sizes) > 10 and len(seen_corners) > 10 and dropped > 0


def test_detr_train_resize_chooses_plain_or_crop_branch_with_detr_sizes():
  example = _coordinate_example()
  stacked = augment._stack(example)  # pylint: disable=protected-access
  branches = {"plain": 0, "crop": 0}
  for i in range(30):
    image, out = augment.detr_train_resize(
        example["image"], stacked, tf.constant([i, 3], tf.int64), min_sizes=(20, 28),
        max_size=40, crop=True, crop_resize_sizes=(24,), crop_range=(8, 16))
    h, w = out.shape[:2]
    span_h, span_w = [float(np.ptp(image.numpy()[..., c])) for c in (0, 1)]  # source extent
    if span_w > 20:  # the whole 24 x 30 image, resized
      branches["plain"] += 1
      assert (h, w) in {detr_get_size(24, 30, s, 40) for s in (20, 28)}
    else:  # a crop of at most 16 x 16 pixels (of the 24-px resize), resized again
      branches["crop"] += 1
      assert span_h <= 15.01 and span_w <= 15.01
      assert (h, w) in {detr_get_size(a, b, s, 40) for a in range(8, 17) for b in range(8, 17)
                        for s in (20, 28)}
  assert branches["plain"] >= 5 and branches["crop"] >= 5
  _, no_crop = augment.detr_train_resize(example["image"], stacked, tf.constant([0, 3], tf.int64),
                                         min_sizes=(20,), max_size=40, crop=False)
  assert no_crop.shape[:2] == detr_get_size(24, 30, 20, 40)


@pytest.fixture(scope="module")
def coco_config(manual_dir, tmp_path_factory):  # pylint: disable=redefined-outer-name
  return pipeline.default_data_config(
      "coco_instances", data_dir=str(tmp_path_factory.mktemp("coco_tfds")),
      manual_dir=str(manual_dir), task="instances", image_size=32, max_instances=4,
      shuffle_buffer=4, prefetch=1)


def _content(pad_mask):
  rows = (~pad_mask).any(axis=1).sum()
  cols = (~pad_mask).any(axis=0).sum()
  return int(rows), int(cols)


def _check_padding(batch, index):
  """``pad_mask`` is exactly the bottom/right region the pipeline padded."""
  pad = batch["pad_mask"][index]
  rows, cols = _content(pad)
  want = np.ones_like(pad)
  want[:rows, :cols] = False
  np.testing.assert_array_equal(pad, want)
  assert np.all(batch["image"][index][pad] == 0) and np.all(batch["label"][index][pad] == 255)
  assert not batch["instance_masks"][index][:, pad].any()
  return rows, cols


def test_eval_batches_mark_the_padded_region(coco_config):
  batch = next(pipeline.get_dataset(coco_config, split="validation", train=False,
                                    global_batch_size=3))
  assert batch["pad_mask"].shape == (3, 32, 32) and batch["pad_mask"].dtype == bool
  contents = set()
  for i in range(2):  # longer side to 32 px: image 3 (24x32) is padded, image 5 (16x16) not
    contents.add(_check_padding(batch, i))
    assert contents >= {tuple(batch["resized_size"][i])}
  assert contents == {(24, 32), (32, 32)}
  assert not batch["valid"][2] and not batch["pad_mask"][2].any()  # filler example


def test_detr_recipe_batches(coco_config):
  cfg = coco_config.copy_and_resolve_references()
  cfg.update({"resize": "detr", "min_sizes": (12, 16, 20), "max_size": 32,
              "augmentation": {"scale_range": (1.0, 1.0), "flip": True, "crop": True}})
  batches = pipeline.get_dataset(cfg, split="train", train=True, global_batch_size=3, seed=2)
  shapes = set()
  for _ in range(4):
    batch = next(batches)
    for i in range(3):
      rows, cols = _check_padding(batch, i)
      shapes.add((rows, cols))
      assert min(rows, cols) <= 20 and max(rows, cols) <= 32
  assert len(shapes) > 2
  val = next(pipeline.get_dataset(cfg, split="validation", train=False, global_batch_size=2))
  for i in range(2):  # DETR's test size: shorter side max(min_sizes) = 20, longer <= 32
    h, w = (int(v) for v in val["orig_size"][i])
    assert _check_padding(val, i) == detr_get_size(h, w, 20, 32)
  cfg.max_size = 40
  with pytest.raises(ValueError, match="image_size=32"):
    pipeline.get_dataset(cfg, split="train", train=True, global_batch_size=3)
  cfg.max_size = 32
  cfg.augmentation.scale_range = (0.5, 2.0)
  with pytest.raises(ValueError, match="scale_range"):
    pipeline.get_dataset(cfg, split="train", train=True, global_batch_size=3)


@pytest.mark.slow  # ~70 s on one core, mostly compiling the set loss
def test_detr_coco_runlocal_train_step(coco_config):
  """The reference recipe's pipeline (``resize='detr'``, ``pad_mask``) through one train step."""
  config = detr_coco.get_config("runlocal")
  config.data.update({"data_dir": coco_config.data_dir, "manual_dir": coco_config.manual_dir})
  config.batch_size = 2
  config.model.update({"backbone_depth": 18, "num_decoder_layers": 1})  # compile time
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    setup = loop._Setup(config)  # pylint: disable=protected-access
    batch = next(setup.dataset(config.data.train_split, train=True))
    assert batch["image"].shape == (2, 64, 64, 3) and batch["pad_mask"].shape == (2, 64, 64)
    assert batch["pad_mask"].any()  # shorter side 32 or 48 in a 64 px canvas
    state = setup.init_state(batch)
    _, metrics = setup.runner.train(state, setup.runner.place_batch(batch))
    assert np.isfinite(float(setup.runner.host(metrics)["loss"]))
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
