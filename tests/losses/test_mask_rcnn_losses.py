"""Mask R-CNN losses on hand-made cases (values computed by hand / numpy)."""

import numpy as np
import pytest

from seg_jax.losses.mask_rcnn import (fast_rcnn_losses, mask_loss, mask_rcnn_loss, rpn_losses,
                                      smooth_l1)


def _bce(logit, target):
  return np.log1p(np.exp(-abs(logit))) + max(logit, 0) - logit * target


def test_smooth_l1_branches():
  x = np.array([0.0, 0.05, -0.05, 0.5, -2.0], np.float32)
  beta = 0.1
  want = [0.0, 0.5 * 0.05 ** 2 / beta, 0.5 * 0.05 ** 2 / beta, 0.5 - 0.05, 2.0 - 0.05]
  np.testing.assert_allclose(np.asarray(smooth_l1(x, beta)), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(smooth_l1(x, 0.0)), np.abs(x))


def test_rpn_losses_hand_case():
  logits = np.array([[2.0, -1.0, 0.5, 3.0]], np.float32)
  labels = np.array([[1, 0, -1, 0]])  # anchor 2 is not sampled
  deltas = np.zeros((1, 4, 4), np.float32)
  targets = np.zeros((1, 4, 4), np.float32)
  targets[0, 0] = [0.05, 0.0, 1.0, 0.0]
  targets[0, 1] = [9.0, 9.0, 9.0, 9.0]  # negative: no box loss
  obj, box = rpn_losses(logits, deltas, labels, targets)
  want_obj = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(3.0, 0)) / 3
  beta = 1 / 9
  want_box = (0.5 * 0.05 ** 2 / beta + (1.0 - 0.5 * beta)) / 3
  np.testing.assert_allclose(float(obj), want_obj, rtol=1e-5)
  np.testing.assert_allclose(float(box), want_box, rtol=1e-5)


def test_fast_rcnn_losses_use_the_labelled_class_only():
  logits = np.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]]], np.float32)
  labels = np.array([[1, 0, -1]])
  deltas = np.zeros((1, 3, 3, 4), np.float32)
  deltas[0, 0, 1] = [1.0, 0.0, 0.0, 0.0]  # class 1 deltas of the positive RoI
  deltas[0, 0, 2] = [50.0, 50.0, 50.0, 50.0]  # other class: ignored
  targets = np.zeros((1, 3, 4), np.float32)
  cls, box = fast_rcnn_losses(logits, deltas, labels, targets)
  lse = lambda v: np.log(np.sum(np.exp(v)))
  want_cls = ((lse(logits[0, 0]) - 2.0) + (lse(logits[0, 1]) - 0.0)) / 2
  np.testing.assert_allclose(float(cls), want_cls, rtol=1e-5)
  np.testing.assert_allclose(float(box), (1.0 - 0.5 / 9) / 2, rtol=1e-5)


def test_mask_loss_picks_gt_class_channel():
  logits = np.zeros((1, 2, 2, 2, 3), np.float32)
  logits[0, 0, ..., 2] = [[2.0, -2.0], [0.0, 1.0]]
  logits[0, 0, ..., 1] = 100.0  # wrong class channel: must not matter
  targets = np.array([[[[1.0, 0.0], [0.5, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]], np.float32)
  labels = np.array([[2, -1]])
  want = np.mean([_bce(2.0, 1), _bce(-2.0, 0), _bce(0.0, 0.5), _bce(1.0, 1)])
  np.testing.assert_allclose(float(mask_loss(logits, labels, targets)), want, rtol=1e-5)
  assert float(mask_loss(logits, np.array([[0, -1]]), targets)) == 0.0


def test_total_is_weighted_sum():
  outputs = {"rpn_logits": np.zeros((1, 2)), "rpn_deltas": np.zeros((1, 2, 4)),
             "rpn_labels": np.array([[1, 0]]), "rpn_targets": np.zeros((1, 2, 4)),
             "roi_logits": np.zeros((1, 1, 2)), "roi_deltas": np.zeros((1, 1, 2, 4)),
             "roi_labels": np.array([[1]]), "roi_targets": np.zeros((1, 1, 4))}
  total, terms = mask_rcnn_loss(outputs, {"loss_classifier": 2.0})
  assert set(terms) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box"}
  np.testing.assert_allclose(float(total), np.log(2) + 2 * np.log(2), rtol=1e-5)
