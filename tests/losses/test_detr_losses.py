"""DETR set loss on hand-made cases, checked against numpy/scipy references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from seg_jax.losses import detr as detr_losses

H = W = 32
K = 3  # real classes; logit K is "no object"


pytestmark = pytest.mark.usefixtures("fast_compile")


def _np_giou(a, b):
  """GIoU of two xyxy boxes, written out by hand."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  area = lambda x: (x[2] - x[0]) * (x[3] - x[1])
  union = area(a) + area(b) - inter
  hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
  return inter / union - (hull - union) / hull


def _cxcywh_to_xyxy(b):
  return np.array([b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2])


def _batch(rng, batch=2, max_boxes=4, counts=(2, 3)):
  boxes = np.zeros((batch, max_boxes, 4), np.float32)
  valid = np.zeros((batch, max_boxes), bool)
  classes = np.zeros((batch, max_boxes), np.int32)
  masks = np.zeros((batch, max_boxes, H, W), np.uint8)
  for b, count in enumerate(counts):
    for i in range(count):
      x1, y1 = rng.integers(0, W // 2, 2)
      x2, y2 = x1 + rng.integers(4, W // 2), y1 + rng.integers(4, H // 2)
      boxes[b, i] = [x1, y1, x2, y2]
      masks[b, i, y1:y2, x1:x2] = 1
      valid[b, i] = True
      classes[b, i] = rng.integers(0, K)
  return {"image": np.zeros((batch, H, W, 3), np.float32), "boxes": boxes, "classes": classes,
          "box_valid": valid, "instance_masks": masks}


def _random_outputs(rng, batch=2, queries=6, layers=3):
  logits = rng.normal(size=(layers, batch, queries, K + 1)).astype(np.float32)
  boxes = rng.uniform(0.2, 0.6, size=(layers, batch, queries, 4)).astype(np.float32)
  return {"pred_logits": logits[-1], "pred_boxes": boxes[-1],
          "aux_logits": logits[:-1], "aux_boxes": boxes[:-1]}


_loss = jax.jit(detr_losses.detr_loss)
_match = jax.jit(detr_losses.match_predictions)


def test_perfect_prediction_has_near_zero_box_loss():
  batch = _batch(np.random.default_rng(0))
  _, tgt_boxes, _ = map(np.asarray, detr_losses.normalized_targets(batch))
  queries = 6
  logits = np.full((2, queries, K + 1), -20.0, np.float32)
  logits[..., K] = 20.0
  boxes = np.full((2, queries, 4), 0.5, np.float32)
  perm = [[4, 1, 5, 0], [2, 0, 3, 5]]  # query holding target i
  for b in range(2):
    for i in range(4):
      if batch["box_valid"][b, i]:
        q = perm[b][i]
        boxes[b, q] = tgt_boxes[b, i]
        logits[b, q] = -20.0
        logits[b, q, batch["classes"][b, i]] = 20.0
  outputs = {"pred_logits": logits, "pred_boxes": boxes}
  loss, metrics = _loss(outputs, batch)
  assert float(metrics["loss_bbox"]) < 1e-5 and float(metrics["loss_giou"]) < 1e-5
  assert float(metrics["loss_ce"]) < 1e-5 and float(loss) < 1e-4
  assert float(metrics["num_boxes"]) == 5
  indices = _match(logits, boxes, batch["classes"], tgt_boxes, batch["box_valid"])
  for b in range(2):
    for i in range(4):
      if batch["box_valid"][b, i]:
        assert int(indices[b, perm[b][i]]) == i


def test_no_objects_gives_only_no_object_cross_entropy():
  rng = np.random.default_rng(1)
  batch = _batch(rng, counts=(0, 0))
  outputs = _random_outputs(rng)
  loss, metrics = _loss(outputs, batch)
  logp = jax.nn.log_softmax(outputs["pred_logits"], -1)
  expected_ce = -np.mean(np.asarray(logp)[..., K])  # all weights equal (eos_coef) -> mean
  np.testing.assert_allclose(metrics["loss_ce"], expected_ce, rtol=1e-5)
  assert float(metrics["loss_bbox"]) == 0 and float(metrics["loss_giou"]) == 0
  aux_ce = -np.asarray(jax.nn.log_softmax(outputs["aux_logits"], -1))[..., K].mean((1, 2))
  np.testing.assert_allclose(loss, expected_ce + aux_ce.sum(), rtol=1e-5)
  grads = jax.grad(lambda o: _loss(o, batch)[0])(outputs)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def _np_cost(logits, boxes, tgt_cls, tgt_boxes):
  prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  cost = np.zeros((len(logits), len(tgt_cls)))
  for q in range(len(logits)):
    for t in range(len(tgt_cls)):
      cost[q, t] = (-prob[q, tgt_cls[t]] + 5 * np.abs(boxes[q] - tgt_boxes[t]).sum()
                    - 2 * _np_giou(_cxcywh_to_xyxy(boxes[q]), _cxcywh_to_xyxy(tgt_boxes[t])))
  return cost


def test_matching_and_losses_against_scipy_reference():
  rng = np.random.default_rng(2)
  batch = _batch(rng)
  outputs = _random_outputs(rng)
  tgt_cls, tgt_boxes, valid = map(np.asarray, detr_losses.normalized_targets(batch))
  _, metrics = _loss(outputs, batch)
  indices = np.asarray(_match(
      outputs["pred_logits"], outputs["pred_boxes"], tgt_cls, tgt_boxes, valid))
  host = np.asarray(jax.jit(functools.partial(
      detr_losses.match_predictions, matcher=detr_losses.scipy_matcher))(
          outputs["pred_logits"], outputs["pred_boxes"], tgt_cls, tgt_boxes, valid))
  np.testing.assert_array_equal(indices, host)  # random costs: unique optimum
  ce_num = ce_den = l1 = giou = 0.0
  for b in range(2):
    real = np.flatnonzero(valid[b])
    cost = _np_cost(outputs["pred_logits"][b], outputs["pred_boxes"][b], tgt_cls[b, real],
                    tgt_boxes[b, real])
    rows, cols = linear_sum_assignment(cost)
    got_rows = np.flatnonzero(indices[b] >= 0)
    np.testing.assert_allclose(cost[got_rows, np.searchsorted(real, indices[b, got_rows])].sum(),
                               cost[rows, cols].sum(), rtol=1e-5)
    target = np.full(6, K)
    target[rows] = tgt_cls[b, real[cols]]
    logp = outputs["pred_logits"][b] - np.log(np.exp(outputs["pred_logits"][b]).sum(-1))[:, None]
    w = np.where(target == K, 0.1, 1.0)
    ce_num += -(w * logp[np.arange(6), target]).sum()
    ce_den += w.sum()
    for q, t in zip(rows, real[cols]):
      l1 += np.abs(outputs["pred_boxes"][b, q] - tgt_boxes[b, t]).sum()
      giou += 1 - _np_giou(_cxcywh_to_xyxy(outputs["pred_boxes"][b, q]),
                           _cxcywh_to_xyxy(tgt_boxes[b, t]))
  np.testing.assert_allclose(metrics["loss_ce"], ce_num / ce_den, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_bbox"], l1 / 5, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_giou"], giou / 5, rtol=1e-5)


def test_device_sum_normalisation_matches_global_batch():
  """psum over a named (vmapped) device axis gives the same loss as one global batch."""
  rng = np.random.default_rng(3)
  batch = _batch(rng, batch=4, counts=(2, 0, 3, 1))
  outputs = _random_outputs(rng, batch=4)
  _, full = _loss(outputs, batch)
  split = lambda x: x.reshape((2, x.shape[0] // 2) + x.shape[1:])
  per_device = jax.jit(jax.vmap(functools.partial(detr_losses.detr_loss, axis_name="d"),
                                axis_name="d"))
  shard_out = {k: (split(v) if not k.startswith("aux") else np.moveaxis(split(
      np.moveaxis(v, 1, 0)), 2, 1)) for k, v in outputs.items()}
  _, sharded = per_device(shard_out, jax.tree.map(split, batch))
  for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_aux", "num_boxes"):
    np.testing.assert_allclose(sharded[key][0], full[key], rtol=1e-5)


def test_mask_losses_reference_and_perfect_masks():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(1, 2, 8, 8)).astype(np.float32)
  targets = (rng.random((1, 3, 8, 8)) < 0.4).astype(np.uint8)
  indices = np.array([[2, -1]], np.int32)
  out = jax.jit(detr_losses.mask_losses)(logits, indices, targets, jnp.float32(2.0))
  p = 1 / (1 + np.exp(-logits[0, 0]))
  t = targets[0, 2].astype(np.float64)
  ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  p_t = p * t + (1 - p) * (1 - t)
  focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).mean()
  dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
  np.testing.assert_allclose(out["loss_mask"], focal / 2, rtol=1e-5)
  np.testing.assert_allclose(out["loss_dice"], dice / 2, rtol=1e-5)
  perfect = np.where(targets[:, [2, 0]] > 0, 30.0, -30.0).astype(np.float32)
  out = detr_losses.mask_losses(perfect, np.array([[2, 0]]), targets, jnp.float32(2.0))
  assert float(out["loss_mask"]) < 1e-6 and float(out["loss_dice"]) < 0.05


def test_targets_are_normalised_by_each_image_size():
  """DETR divides boxes by each image's unpadded (height, width), not by the canvas."""
  batch = _batch(np.random.default_rng(3))
  sizes = np.array([[20.0, 30.0], [16.0, 12.0]], np.float32)
  _, boxes, valid = map(np.asarray, detr_losses.normalized_targets(batch, sizes))
  xyxy = np.asarray(batch["boxes"], np.float64)
  for b in range(2):
    h, w = sizes[b]
    for i in np.flatnonzero(valid[b]):
      x1, y1, x2, y2 = xyxy[b, i]
      expected = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
      np.testing.assert_allclose(boxes[b, i], expected, rtol=1e-6, atol=1e-6)
  _, canvas, _ = map(np.asarray, detr_losses.normalized_targets(batch))
  height, width = batch["image"].shape[1:3]
  _, same, _ = map(np.asarray, detr_losses.normalized_targets(
      batch, np.tile([[height, width]], (2, 1))))
  np.testing.assert_allclose(same[valid], canvas[valid], rtol=1e-6)
