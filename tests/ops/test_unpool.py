"""Unpooling ops against the lecture's examples and numpy loop references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import max_pool_with_argmax, max_unpool, unpool_bed_of_nails, unpool_nearest

LECTURE_INPUT = np.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]


def test_lecture_nearest_example():
  want = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
  np.testing.assert_array_equal(unpool_nearest(LECTURE_INPUT)[0, :, :, 0], want)


def test_lecture_bed_of_nails_example():
  want = [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
  np.testing.assert_array_equal(unpool_bed_of_nails(LECTURE_INPUT)[0, :, :, 0], want)


@pytest.mark.parametrize("factor", [1, 3, (2, 3)])
def test_unpooling_matches_loops(factor):
  fh, fw = (factor, factor) if isinstance(factor, int) else factor
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 2)).astype(np.float32)
  nearest = np.zeros((2, 3 * fh, 4 * fw, 2), np.float32)
  nails = np.zeros_like(nearest)
  for i in range(3 * fh):
    for j in range(4 * fw):
      nearest[:, i, j] = x[:, i // fh, j // fw]
      if i % fh == 0 and j % fw == 0:
        nails[:, i, j] = x[:, i // fh, j // fw]
  np.testing.assert_array_equal(jax.jit(unpool_nearest, static_argnums=1)(x, factor), nearest)
  np.testing.assert_array_equal(jax.jit(unpool_bed_of_nails, static_argnums=1)(x, factor), nails)


def pool_reference(x, window, stride, padding):
  """Loop reference, PyTorch's rule: scan the in-image window positions row-major, starting
  at the first one, and move on when ``value > best or isnan(value)``."""
  n, h, w, c = x.shape
  (kh, kw), (sh, sw), (ph, pw) = [(v, v) if isinstance(v, int) else v
                                  for v in (window, stride, padding)]
  ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
  pooled = np.zeros((n, ho, wo, c), x.dtype)
  idx = np.zeros((n, ho, wo, c), np.int64)
  for b in range(n):
    for ch in range(c):
      for i in range(ho):
        for j in range(wo):
          best, where = -np.inf, None
          for a in range(kh):
            for e in range(kw):
              r, s = i * sh + a - ph, j * sw + e - pw
              if not (0 <= r < h and 0 <= s < w):
                continue
              value = x[b, r, s, ch]
              if where is None or value > best or np.isnan(value):
                best, where = value, r * w + s
          pooled[b, i, j, ch], idx[b, i, j, ch] = best, where
  return pooled, idx


def unpool_reference(x, idx, out_h, out_w):
  """Sequential writes in row-major order: the last write to a position wins."""
  n, h, w, c = x.shape
  out = np.zeros((n, out_h * out_w, c), x.dtype)
  for b in range(n):
    for ch in range(c):
      for i in range(h):
        for j in range(w):
          out[b, idx[b, i, j, ch], ch] = x[b, i, j, ch]
  return out.reshape(n, out_h, out_w, c)


POOL_CASES = [
    ((4, 4), 2, 2, 0), ((5, 7), 2, 2, 0), ((7, 6), 3, 2, 1), ((6, 6), 3, 1, 1),
    ((9, 5), (3, 2), (2, 1), (1, 0)), ((5, 5), 3, 3, 0), ((3, 3), 3, 2, 1),
]


@pytest.mark.parametrize("data", ["normal", "ties", "constant", "nan_inf"])
@pytest.mark.parametrize("hw,window,stride,padding", POOL_CASES)
def test_max_pool_with_argmax_and_unpool_match_loops(hw, window, stride, padding, data):
  rng = np.random.default_rng(sum(hw))
  x = rng.normal(size=(2,) + hw + (3,)).astype(np.float32)
  if data == "ties":
    x = np.round(x)
  elif data == "constant":
    x = np.full_like(x, 0.5)
  elif data == "nan_inf":  # NaN is the maximum (the last NaN wins); -inf pixels are valid
    x[0, :2, :2, 0] = np.nan
    x[1, 1:3, 1, 1] = np.nan
    x[0, -2:, -2:, 2] = -np.inf
  pooled, idx = max_pool_with_argmax(x, window, stride, padding)  # jitted inside
  want_pooled, want_idx = pool_reference(x, window, stride, padding)
  assert idx.dtype == jnp.int32 and idx.shape == pooled.shape == want_pooled.shape
  np.testing.assert_array_equal(np.asarray(pooled), want_pooled)  # NaNs compare equal here
  np.testing.assert_array_equal(np.asarray(idx), want_idx)
  # Round trip back to the (possibly odd) input size; overlapping windows may pick the
  # same pixel, then the last one in row-major order wins (the values are equal anyway).
  unpooled = max_unpool(pooled, idx, hw)
  np.testing.assert_array_equal(np.asarray(unpooled), unpool_reference(want_pooled, want_idx, *hw))
  if data == "normal" and window == stride:  # non-overlapping: keep the maxima, zero the rest
    kept = np.asarray(unpooled) != 0
    np.testing.assert_array_equal(np.asarray(unpooled)[kept], x[kept])
    assert kept.sum() == pooled.size


def test_round_trip_under_outer_jit():
  x = np.random.default_rng(5).normal(size=(2, 7, 5, 3)).astype(np.float32)

  @jax.jit
  def round_trip(a):
    pooled, idx = max_pool_with_argmax(a, 3, 2, 1)
    return pooled, idx, max_unpool(pooled, idx, a.shape[1:3])

  pooled, idx, unpooled = round_trip(x)
  want_pooled, want_idx = pool_reference(x, 3, 2, 1)
  np.testing.assert_array_equal(np.asarray(pooled), want_pooled)
  np.testing.assert_array_equal(np.asarray(idx), want_idx)
  np.testing.assert_array_equal(np.asarray(unpooled), unpool_reference(want_pooled, want_idx, 7, 5))


class UnpoolVariantsTest(chex.TestCase):
  """Pool-with-argmax and unpool give the loop references with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_round_trip_with_and_without_jit(self):
    x = np.random.default_rng(6).normal(size=(1, 5, 6, 2)).astype(np.float32)
    pooled, idx = self.variant(lambda a: max_pool_with_argmax(a, 2, 2))(x)
    want_pooled, want_idx = pool_reference(x, 2, 2, 0)
    np.testing.assert_array_equal(np.asarray(pooled), want_pooled)
    np.testing.assert_array_equal(np.asarray(idx), want_idx)
    unpooled = self.variant(lambda p, i: max_unpool(p, i, (5, 6)))(pooled, idx)
    np.testing.assert_array_equal(np.asarray(unpooled),
                                  unpool_reference(want_pooled, want_idx, 5, 6))


def test_max_unpool_duplicate_indices_last_write_wins():
  values = np.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
  indices = np.array([[5, 5], [0, 5]], np.int32)[None, :, :, None]
  out = max_unpool(values, indices, (2, 3))[0, :, :, 0]
  np.testing.assert_array_equal(out, [[3, 0, 0], [0, 0, 4]])
  # Only the winning source receives gradient.
  grad = jax.jit(jax.grad(lambda v: (max_unpool(v, indices, (2, 3)) * 10.0).sum()))(values)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0, 0], [10, 10]])
  # Out-of-range indices are dropped.
  bad = np.array([[-1, 6], [0, 1]], np.int32)[None, :, :, None]
  np.testing.assert_array_equal(max_unpool(values, bad, (2, 3))[0, :, :, 0], [[3, 4, 0], [0, 0, 0]])


@pytest.mark.parametrize("window,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_gradient_matches_reduce_window(window, stride, padding):
  x = np.random.default_rng(3).normal(size=(2, 7, 6, 2)).astype(np.float32)  # no ties
  out = (7 + 2 * padding - window) // stride + 1, (6 + 2 * padding - window) // stride + 1
  cot = np.random.default_rng(4).normal(size=(2,) + out + (2,)).astype(np.float32)
  ours = jax.jit(jax.grad(
      lambda a: (max_pool_with_argmax(a, window, stride, padding)[0] * cot).sum()))(x)

  def reduce_window_max(a):
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), pads)

  ref = jax.jit(jax.grad(lambda a: (reduce_window_max(a) * cot).sum()))(x)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_on_ties_goes_to_first_maximum():
  x = np.ones((1, 2, 2, 1), np.float32)
  grad = jax.jit(jax.grad(lambda a: max_pool_with_argmax(a)[0].sum()))(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[1, 0], [0, 0]])


def test_max_pool_edge_values():
  x = np.full((1, 3, 3, 1), -np.inf, np.float32)  # padding (-inf too) must still never win
  _, idx = max_pool_with_argmax(x, 3, 2, 1)
  np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 1], [3, 4]])
  ints = np.arange(16, dtype=np.int32).reshape(1, 4, 4, 1)
  pooled, idx = max_pool_with_argmax(ints)
  np.testing.assert_array_equal(pooled[0, :, :, 0], [[5, 7], [13, 15]])
  np.testing.assert_array_equal(idx[0, :, :, 0], [[5, 7], [13, 15]])


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="padding"):
    max_pool_with_argmax(np.ones((1, 4, 4, 1)), 2, 2, 2)
  with pytest.raises(ValueError, match="smaller than window"):
    max_pool_with_argmax(np.ones((1, 2, 2, 1)), 3, 1, 0)
  with pytest.raises(ValueError, match="indices shape"):
    max_unpool(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 1, 1), np.int32), (4, 4))
  with pytest.raises(ValueError, match="integers"):
    max_unpool(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), (4, 4))
  with pytest.raises(ValueError, match="N, H, W, C"):
    unpool_nearest(np.ones((2, 2)))
