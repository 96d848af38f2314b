"""RoIPool against an independent numpy loop written from torchvision's CPU kernel rules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import roi_pool
from seg_jax.ops.roi_align import _float32_quotient


def _c_round(value: float) -> int:
  """C ``round``: half away from zero."""
  return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _reference(features, boxes, indices, oh, ow, scale):
  """Output ``(K, oh, ow, C)`` and argmax ``(K, oh, ow, C, 2)`` (row, col; -1 if empty)."""
  _, height, width, channels = features.shape
  out = np.zeros((len(boxes), oh, ow, channels), np.float32)
  argmax = np.full((len(boxes), oh, ow, channels, 2), -1)
  for k, (box, b) in enumerate(zip(boxes, indices)):
    x0, y0, x1, y1 = (_c_round(float(np.float32(v) * np.float32(scale))) for v in box)
    roi_w, roi_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    bin_h, bin_w = np.float32(roi_h) / np.float32(oh), np.float32(roi_w) / np.float32(ow)
    for ph in range(oh):
      h_lo = min(max(int(math.floor(ph * bin_h)) + y0, 0), height)
      h_hi = min(max(int(math.ceil((ph + 1) * bin_h)) + y0, 0), height)
      for pw in range(ow):
        w_lo = min(max(int(math.floor(pw * bin_w)) + x0, 0), width)
        w_hi = min(max(int(math.ceil((pw + 1) * bin_w)) + x0, 0), width)
        if h_hi <= h_lo or w_hi <= w_lo:
          continue
        for c in range(channels):
          best, where = -np.inf, None
          for h in range(h_lo, h_hi):
            for w in range(w_lo, w_hi):
              if features[b, h, w, c] > best:
                best, where = features[b, h, w, c], (h, w)
          out[k, ph, pw, c] = best
          argmax[k, ph, pw, c] = where
  return out, argmax


def _case(seed, n=2, height=9, width=11, channels=3, num_boxes=12, ties=False):
  rng = np.random.default_rng(seed)
  if ties:  # few distinct values: the first-maximum rule decides the gradient
    features = rng.integers(0, 3, (n, height, width, channels)).astype(np.float32)
  else:
    features = rng.normal(size=(n, height, width, channels)).astype(np.float32)
  xy0 = rng.uniform(-6, 18, (num_boxes, 2))
  size = rng.uniform(0, 14, (num_boxes, 2))
  boxes = np.concatenate([xy0, xy0 + size], 1).astype(np.float32)
  boxes[0] = [2.5, 1.5, 2.5, 1.5]       # zero-size box on exact halves
  boxes[1] = [-10, -10, 40, 40]         # covers the map and beyond
  boxes[2] = [30, 30, 40, 40]           # fully outside: every bin empty
  boxes[3] = [3.2, 4.7, 3.9, 5.1]       # tiny box inside one pixel
  indices = rng.integers(0, n, num_boxes).astype(np.int32)
  return features, boxes, indices


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("output_size", [(2, 2), (3, 4), (7, 7)])
def test_roi_pool_matches_loop_reference(scale, output_size):
  features, boxes, indices = _case(int(scale * 8) + output_size[1])
  got = jax.jit(roi_pool, static_argnums=3, static_argnames="spatial_scale")(
      jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(indices), output_size,
      spatial_scale=scale)
  want, _ = _reference(features, boxes, indices, *output_size, scale)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_roi_pool_empty_bins_are_zero_and_rounding_is_half_away():
  features = np.arange(1, 1 + 2 * 6 * 6, dtype=np.float32).reshape(1, 6, 6, 2)
  # x0 = 0.5 * 1 -> round(0.5) = 1 (jnp.round would give 0); box fully outside -> zeros.
  boxes = np.array([[0.5, 0.5, 2.5, 2.5], [10, 10, 12, 12]], np.float32)
  got = np.asarray(roi_pool(jnp.asarray(features), jnp.asarray(boxes),
                            jnp.zeros(2, jnp.int32), 1))
  np.testing.assert_array_equal(got[0, 0, 0], features[0, 3, 3])  # rows/cols 1..3
  np.testing.assert_array_equal(got[1], 0.0)


@pytest.mark.parametrize("ties", [False, True])
def test_roi_pool_gradient_goes_to_the_reference_argmax(ties):
  features, boxes, indices = _case(3, ties=ties)
  output_size = (3, 2)
  upstream = np.random.default_rng(1).normal(
      size=(len(boxes), *output_size, features.shape[-1])).astype(np.float32)
  loss = lambda f: jnp.sum(roi_pool(f, jnp.asarray(boxes), jnp.asarray(indices), output_size,
                                    spatial_scale=0.5) * upstream)
  grad = np.asarray(jax.grad(loss)(jnp.asarray(features)))
  _, argmax = _reference(features, boxes, indices, *output_size, 0.5)
  want = np.zeros_like(features)
  for k, ph, pw, c in np.ndindex(*argmax.shape[:4]):
    h, w = argmax[k, ph, pw, c]
    if h >= 0:
      want[indices[k], h, w, c] += upstream[k, ph, pw, c]
  np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-6)


def test_roi_pool_rejects_bad_shapes():
  with pytest.raises(ValueError, match="boxes"):
    roi_pool(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 5)), jnp.zeros(3, jnp.int32), 2)
  with pytest.raises(ValueError, match="box_indices"):
    roi_pool(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 4)), jnp.zeros(2, jnp.int32), 2)


def test_bin_size_is_the_correctly_rounded_float32_quotient():
  # XLA's vectorised CPU division can be an ulp off; RoIPool's bin edges depend on that ulp.
  lengths = np.arange(1, 20000, dtype=np.int32)
  for out in (1, 3, 7, 14, 27, 127):
    got = np.asarray(_float32_quotient(jnp.asarray(lengths), out))
    np.testing.assert_array_equal(got, lengths.astype(np.float32) / np.float32(out))
