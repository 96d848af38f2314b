"""Mask R-CNN's RoI operator choice and Faster R-CNN (no mask head): trace and train a step."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seg_jax.models import get_model
from seg_jax.models.roi_heads import pool_rois
from seg_jax.ops import roi_align_batched, roi_pool
from seg_jax.tasks import instance

pytestmark = pytest.mark.usefixtures("fast_compile")


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
  return {"image": image, "boxes": boxes, "classes": np.array([[0, 3, 0]] * 2, np.int32),
          "instance_masks": masks, "box_valid": np.array([[True, True, False]] * 2)}


@pytest.mark.parametrize("roi_op,with_mask", [("align", True), ("align_legacy", True),
                                              ("pool", True), ("align", False)])
def test_roi_op_traces_and_trains_a_step(roi_op, with_mask):
  model = get_model("mask_rcnn", **TINY, roi_op=roi_op, with_mask=with_mask)
  batch = _batch()
  config = ml_collections.ConfigDict({"model": {"num_classes": 4, "with_mask": with_mask},
                                      "loss": {}})
  variables = model.init(jax.random.key(0), jnp.asarray(batch["image"][:1]), train=False)
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
