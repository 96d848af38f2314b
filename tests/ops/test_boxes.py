"""Box primitives against brute-force numpy and round trips."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import (box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh,
                         clip_boxes, decode_boxes, encode_boxes, generalized_box_iou)


def _random_boxes(rng, n):
  xy = rng.uniform(-10, 50, size=(n, 2))
  wh = rng.uniform(0.5, 30, size=(n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _iou_giou(a, b):
  inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = inter_w * inter_h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
  return inter / union, inter / union - (hull - union) / hull


def test_iou_and_giou_match_bruteforce():
  rng = np.random.default_rng(0)
  a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
  a[1] = b[2]  # identical pair -> IoU 1
  want = np.array([[_iou_giou(x, y) for y in b] for x in a], np.float64)
  np.testing.assert_allclose(np.asarray(box_iou(a, b)), want[..., 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(generalized_box_iou(a, b)), want[..., 1],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(box_iou(a, b)[1, 2]), 1.0, rtol=1e-6)


class PairwiseVariantsTest(chex.TestCase):
  """box_iou / generalized_box_iou give the brute-force numbers with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_pairwise_with_and_without_jit(self):
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 4), _random_boxes(rng, 3)
    want = np.array([[_iou_giou(x, y) for y in b] for x in a], np.float64)
    np.testing.assert_allclose(self.variant(box_iou)(a, b), want[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(self.variant(generalized_box_iou)(a, b), want[..., 1],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou])
def test_pairwise_rejects_boxes_that_would_broadcast(fn):
  boxes = _random_boxes(np.random.default_rng(2), 3)
  with pytest.raises(AssertionError):
    fn(boxes[None], boxes)  # a batch axis: (1, 3, 4) would broadcast to a wrong shape
  with pytest.raises(AssertionError):
    fn(boxes, boxes[:, :3])  # three coordinates
  with pytest.raises(AssertionError):
    decode_boxes(np.zeros((3, 5), np.float32), boxes)


def test_area_clip_and_format_round_trip():
  rng = np.random.default_rng(1)
  boxes = _random_boxes(rng, 6)
  np.testing.assert_allclose(np.asarray(box_area(boxes)),
                             (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), rtol=1e-6)
  round_trip = box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes))
  np.testing.assert_allclose(np.asarray(round_trip), boxes, rtol=1e-5, atol=1e-5)
  clipped = np.asarray(clip_boxes(boxes, 20, 30))
  np.testing.assert_array_equal(clipped[:, [0, 2]], np.clip(boxes[:, [0, 2]], 0, 30))
  np.testing.assert_array_equal(clipped[:, [1, 3]], np.clip(boxes[:, [1, 3]], 0, 20))


def test_box_coder_matches_formula_and_round_trips():
  rng = np.random.default_rng(2)
  proposals, gt = _random_boxes(rng, 8), _random_boxes(rng, 8)
  weights = (10.0, 10.0, 5.0, 5.0)
  deltas = np.asarray(jax.jit(encode_boxes)(gt, proposals))
  pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
  gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
  want = np.stack([10 * ((gt[:, 0] + gw / 2) - (proposals[:, 0] + pw / 2)) / pw,
                   10 * ((gt[:, 1] + gh / 2) - (proposals[:, 1] + ph / 2)) / ph,
                   5 * np.log(gw / pw), 5 * np.log(gh / ph)], 1)
  np.testing.assert_allclose(deltas, want, rtol=1e-4, atol=1e-4)
  decoded = decode_boxes(jnp.asarray(deltas), proposals, weights)
  np.testing.assert_allclose(np.asarray(decoded), gt, rtol=1e-4, atol=1e-3)
  unit = decode_boxes(encode_boxes(gt, proposals, (1, 1, 1, 1)), proposals, (1, 1, 1, 1))
  np.testing.assert_allclose(np.asarray(unit), gt, rtol=1e-4, atol=1e-3)


def test_decode_clamps_large_log_sizes():
  box = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
  out = np.asarray(decode_boxes(np.array([[0.0, 0.0, 1e3, 1e3]], np.float32), box))
  np.testing.assert_allclose(out[0, 2] - out[0, 0], 10 * 1000 / 16, rtol=1e-4)
