"""Mask R-CNN: matcher/sampler/targets pieces, mask pasting, shapes and a jitted train step;
the RoI operator choice (align / align_legacy / pool) and Faster R-CNN (no mask head)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.losses.mask_rcnn import mask_rcnn_loss
from seg_jax.models import get_model
from seg_jax.models.roi_heads import paste_masks, pool_rois, roi_targets
from seg_jax.models.rpn import match_boxes, sample_balanced
from seg_jax.ops import roi_align_batched, roi_pool
from seg_jax.tasks import instance
from seg_jax.training.config import base_config


def test_match_boxes_thresholds_and_low_quality():
  iou = np.array([[0.8, 0.1], [0.5, 0.2], [0.1, 0.6], [0.2, 0.25], [0.9, 0.95]], np.float32)
  valid = np.array([True, True])
  got = match_boxes(jnp.asarray(iou), jnp.asarray(valid), 0.7, 0.3, False)
  np.testing.assert_array_equal(got, [0, -2, -2, -1, 1])
  # gt 1's best IoU is 0.95 (row 4); gt 0's best is 0.9 (row 4 too) -> nothing new ...
  got = match_boxes(jnp.asarray(iou[:4]), jnp.asarray(valid), 0.7, 0.3, True)
  # ... without row 4, gt 1's best is row 2 (0.6) which becomes a match.
  np.testing.assert_array_equal(got, [0, -2, 1, -1])
  got = match_boxes(jnp.asarray(iou), jnp.asarray([True, False]), 0.7, 0.3, False)
  np.testing.assert_array_equal(got, [0, -2, -1, -1, 0])


@pytest.mark.parametrize("seed", range(3))
def test_sample_balanced_counts(seed):
  rng = np.random.default_rng(seed)
  labels = rng.choice([-1, 0, 1, 2], size=200, p=[0.3, 0.5, 0.1, 0.1])
  sample = jax.jit(sample_balanced, static_argnums=(2, 3))
  pos, neg = sample(jax.random.key(seed, impl="rbg"), jnp.asarray(labels), 64, 0.25)
  pos, neg = np.asarray(pos), np.asarray(neg)
  assert pos.sum() == min(16, (labels > 0).sum())
  assert neg.sum() == min(64 - pos.sum(), (labels == 0).sum())
  assert np.all(labels[pos] > 0) and np.all(labels[neg] == 0)


def test_roi_targets_positives_first_and_encoded():
  proposals = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40], [0, 0, 0, 0]],
                       np.float32)
  valid = np.array([True, True, True, False])
  gt = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
  targets_fn = jax.jit(functools.partial(roi_targets, batch_size=4, positive_fraction=0.5,
                                         fg_iou=0.5, bg_iou=0.5))
  rois, labels, targets, matched = targets_fn(
      jax.random.key(0, impl="rbg"), jnp.asarray(proposals), jnp.asarray(valid),
      jnp.asarray(gt), jnp.array([2, 0]), jnp.array([True, False]))
  labels = np.asarray(labels)
  # Positives: proposal 0, 1 (IoU 0.68) and the appended gt box -> at most 2 sampled.
  assert list(labels[:2]) == [3, 3] and labels[2] == 0 and labels[3] == -1
  np.testing.assert_array_equal(np.asarray(matched[:2]), [0, 0])
  assert np.all(np.isfinite(np.asarray(targets)))
  np.testing.assert_allclose(np.asarray(targets)[2:], 0.0)


def test_paste_masks_full_box_and_offsets():
  probs = jnp.ones((2, 4, 4))
  boxes = jnp.array([[0.0, 0.0, 8.0, 8.0], [2.0, 4.0, 6.0, 8.0]])
  pasted = np.asarray(jax.jit(paste_masks, static_argnums=2)(probs, boxes, (8, 10)))
  assert pasted.shape == (2, 8, 10)
  # Inside the box (away from the half-cell border) the constant mask is reproduced.
  np.testing.assert_allclose(pasted[0, 1:7, 1:7], 1.0, atol=1e-6)
  assert pasted[0, :, 9].max() == 0.0
  binary = pasted[1] > 0.5
  ys, xs = np.nonzero(binary)
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4, 7, 2, 5)


TINY = dict(num_classes=4, backbone_depth=18, width=0.125, frozen_bn=False,
            anchor_sizes=((8,), (16,), (32,), (64,), (128,)), rpn_batch_size=32,
            rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32,
            rpn_pre_nms_top_n_test=64, rpn_post_nms_top_n_test=32, roi_batch_size=16,
            representation_size=32, mask_channels=8, max_detections=5)


def _batch(size=64):
  boxes = np.array([[[4, 6, 30, 28], [24, 30, 60, 58], [0, 0, 0, 0]]] * 2, np.float32)
  masks = np.zeros((2, 3, size, size), np.uint8)
  for b in range(2):
    for i in range(2):
      x0, y0, x1, y1 = boxes[b, i].astype(int)
      masks[b, i, y0:y1, x0:x1] = 1
  image = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  image += masks.max(1)[..., None] * 2.0
  return {"image": image, "boxes": boxes, "classes": np.array([[0, 3, 0]] * 2, np.int32),
          "instance_masks": masks, "box_valid": np.array([[True, True, False]] * 2)}


def test_inference_shapes_and_train_steps_reduce_loss(fast_compile):
  model = get_model("mask_rcnn", **TINY)
  batch = _batch()
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0, impl="rbg"), batch["image"])
  # init already compiled and ran the inference path; shapes only here (no second compile).
  out = jax.eval_shape(functools.partial(model.apply, train=False), variables, batch["image"])
  assert out["boxes"].shape == (2, 5, 4) and out["scores"].shape == (2, 5)
  assert out["classes"].shape == (2, 5) and out["masks"].shape == (2, 5, 64, 64)
  assert out["proposals"].shape == (2, 32, 4) and out["mask_probs"].dtype == jnp.float32

  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, batch_stats, opt_state, key):
    def loss_fn(p):
      outputs, updates = model.apply({"params": p, "batch_stats": batch_stats}, batch["image"],
                                     train=True, targets=batch, rngs={"sampling": key},
                                     mutable=["batch_stats"])
      total, terms = mask_rcnn_loss(outputs)
      return total, (terms, updates["batch_stats"])
    (loss, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss, terms, grads

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for i in range(4):
    params, stats, opt_state, loss, terms, grads = step(
        params, stats, opt_state, jax.random.key(i, impl="rbg"))
    if i == 0:
      assert set(terms) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box",
                            "loss_mask"}
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
      assert float(optax.global_norm(grads)) > 0
      # the RoIAlign-pooled features reach the loss (the other RoI ops: the test below)
      assert float(jnp.abs(grads["box_head"]["fc6"]["kernel"]).sum()) > 0
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses


def test_rejects_bad_image_size():
  model = get_model("mask_rcnn", **TINY)
  with pytest.raises(ValueError, match="multiples of 32"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 48, 40, 3))))


# RoIAlign with the mask head (the default) is trained by the test above.
@pytest.mark.parametrize("roi_op,with_mask", [("align_legacy", True), ("pool", True),
                                              ("align", False)])
def test_roi_op_traces_and_trains_a_step(roi_op, with_mask, fast_compile):
  model = get_model("mask_rcnn", **TINY, roi_op=roi_op, with_mask=with_mask)
  batch = _batch()
  config = base_config(task="instance")  # every loss weight 1, smooth-L1 beta 1/9
  config.model.update({"num_classes": 4, "with_mask": with_mask})
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.asarray(batch["image"][:1]))
  assert ("mask_head" in variables["params"]) == with_mask
  out = jax.eval_shape(functools.partial(instance.predict, model, config=config), variables,
                       batch)
  assert ("masks" in out) == with_mask and out["boxes"].shape == (2, 5, 4)

  @jax.jit
  def step(params):
    grad_fn = jax.value_and_grad(instance.loss_fn, argnums=1, has_aux=True)
    return grad_fn(model, params, variables["batch_stats"], batch, jax.random.key(1), config)

  (loss, (terms, _)), grads = step(variables["params"])
  assert ("loss_mask" in terms) == with_mask and len(terms) == 4 + with_mask
  assert np.isfinite(float(loss))
  box_head_grad = grads["box_head"]["fc6"]["kernel"]
  assert float(jnp.abs(box_head_grad).sum()) > 0  # the pooled features reach the loss


def test_pool_rois_dispatches_to_the_ops():
  rng = np.random.default_rng(0)
  feature = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  boxes = jnp.asarray([[[1, 2, 9, 7], [0, 0, 16, 16]], [[3, 3, 5, 12], [4, 1, 7, 2]]],
                      jnp.float32)
  pooled = pool_rois(feature, boxes, 3, roi_op="pool", spatial_scale=0.5)
  want = roi_pool(feature, boxes.reshape(4, 4), jnp.array([0, 0, 1, 1]), 3, spatial_scale=0.5)
  np.testing.assert_array_equal(pooled.reshape(4, 3, 3, 3), want)
  for op, aligned in (("align", True), ("align_legacy", False)):
    np.testing.assert_array_equal(
        pool_rois(feature, boxes, 3, roi_op=op, spatial_scale=0.5),
        roi_align_batched(feature, boxes, 3, spatial_scale=0.5, aligned=aligned))
  with pytest.raises(ValueError, match="roi_op"):
    pool_rois(feature, boxes, 3, roi_op="warp", spatial_scale=0.5)
