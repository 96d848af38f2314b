"""Faster R-CNN runlocal end to end (+ official COCO evaluation of its checkpoint), the
Detectron2 recipe pieces of mask_rcnn_coco (frozen stem + res2, shorter-side resize)."""

import jax
import numpy as np
import pytest

from experiments.configs import faster_rcnn_shapes, mask_rcnn_coco
from seg_jax import coco_eval
from seg_jax.data import augment
from seg_jax.data._tf import tf
from seg_jax.models import get_model
from seg_jax.training import loop, optim


def test_faster_rcnn_runlocal_trains_and_evaluates_officially(tmp_path):
  config = faster_rcnn_shapes.get_config("runlocal")
  assert config.model.with_mask is False
  workdir = str(tmp_path / "run")
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    scores = loop.train_and_evaluate(config, workdir)
    assert "box_ap" in scores and "mask_ap" not in scores
    step, pairs = loop.predict_eval_split(config, workdir)
    official = coco_eval.evaluate_predictions(
        pairs, config.data, 4, str(tmp_path / "gt.json"), str(tmp_path / "results.json"))
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
  assert step == config.num_train_steps
  assert set(official) == {"bbox"} and len(official["bbox"]) == 12  # no masks: no segm
  assert all(np.isnan(v) or 0.0 <= v <= 1.0 for v in official["bbox"].values())


def test_mask_rcnn_coco_freezes_stem_and_res2_only():
  config = mask_rcnn_coco.get_config("runlocal")
  assert config.model.rpn_post_nms_top_n_train < config.model.rpn_pre_nms_top_n_train
  assert config.loss.smooth_l1_beta == 0.0 and config.data.resize == "shorter_side"
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  model = get_model("mask_rcnn", **kwargs)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 64, 64, 3)),
                                             train=False))
  multipliers = optim.lr_multiplier_tree(shapes["params"], config.optimizer.lr_multipliers)
  flat = {optim.param_path(p): m for p, m in jax.tree_util.tree_leaves_with_path(multipliers)}
  frozen = sorted(p for p, m in flat.items() if m == 0.0)
  assert frozen and all(p.startswith(("backbone/conv1", "backbone/layer1_")) for p in frozen)
  assert all(m == 1.0 for p, m in flat.items() if p.startswith("backbone/layer2_"))
  assert any(p.startswith("backbone/layer1_") for p in frozen)


def _example(height, width):
  return {"image": tf.zeros([height, width, 3]), "label": tf.zeros([height, width], tf.int32),
          "masks": tf.ones([1, height, width], tf.int32), "classes": tf.zeros([1], tf.int32)}


@pytest.mark.parametrize("height,width,want", [(100, 200, (32, 64)), (60, 40, (64, 43)),
                                               (10, 100, (6, 64))])
def test_shorter_side_eval_resize(height, width, want):
  # Test size max(min_sizes) = 48 on the shorter side unless the longer exceeds 64.
  out = augment.eval_transform(_example(height, width), image_size=64, resize="shorter_side",
                               ignore_label=255, min_sizes=(32, 48), max_size=64)
  assert tuple(out["resized_size"].numpy()) == want
  assert out["image"].shape == (64, 64, 3)


def test_shorter_side_train_sizes_come_from_min_sizes():
  seen = set()
  for i in range(24):
    out = augment.train_transform(
        _example(50, 80), tf.constant([i, 0], tf.int64), image_size=64, scale_range=(1.0, 1.0),
        flip=False, crop=True, resize="shorter_side", ignore_label=255, min_sizes=(20, 30, 40),
        max_size=60)
    mask = out["masks"].numpy()[0]
    seen.add((int(mask.any(1).sum()), int(mask.any(0).sum())))
  # shorter side 20/30/40 -> (20, 32), (30, 48), and 40 capped by max_size 60 -> (38, 60).
  assert seen == {(20, 32), (30, 48), (38, 60)}
