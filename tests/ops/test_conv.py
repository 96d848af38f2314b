"""seg_jax.ops.conv2d against a direct numpy loop over output pixels."""

import itertools

import jax
import numpy as np
import pytest

from seg_jax.ops.conv import conv2d, normalize_padding


def _explicit_padding(padding, size, k, stride, dilation):
  """Reference padding per axis as (low, high), including TF-style 'SAME'."""
  if padding == "VALID":
    return (0, 0)
  if padding == "SAME":
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
    return (total // 2, total - total // 2)
  raise AssertionError(padding)


def conv2d_reference(x, kernel, stride, padding, dilation, groups=1):
  """y[n,i,j,o] = sum_{a,b,c} xpad[n, i*s+a*d, j*s+b*d, g*cin+c] k[a,b,c,o], one pixel at a time."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  n, h, w, _ = x.shape
  kh, kw, cin_g, cout = kernel.shape
  (sh, sw), (dh, dw) = stride, dilation
  if isinstance(padding, str):
    pads = (_explicit_padding(padding, h, kh, sh, dh), _explicit_padding(padding, w, kw, sw, dw))
  else:
    pads = padding
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
  wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
  cout_g = cout // groups
  y = np.zeros((n, ho, wo, cout))
  for i in range(ho):
    for j in range(wo):
      patch = xp[:, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
      for g in range(groups):
        xs = patch[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        y[:, i, j, g * cout_g:(g + 1) * cout_g] = np.einsum("nabc,abco->no", xs, ks)
  return y


PADDINGS = [0, 1, (1, 2), ((0, 1), (2, 0)), "VALID", "SAME"]
CASES = list(itertools.product([1, 2, (2, 1)], PADDINGS, [1, 2, (1, 2)]))


@pytest.mark.parametrize("stride,padding,dilation", CASES)
def test_conv2d_matches_numpy_loop(stride, padding, dilation):
  rng = np.random.default_rng(len(str((stride, padding, dilation))))
  x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
  kernel = rng.normal(size=(3, 2, 3, 4)).astype(np.float32)
  pair = lambda v: (v, v) if isinstance(v, int) else v
  pads = normalize_padding(padding)
  got = conv2d(x, kernel, stride=stride, padding=padding, dilation=dilation)
  want = conv2d_reference(x, kernel, pair(stride), pads, pair(dilation))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_conv2d_grouped_and_jit():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 7, 7, 4)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)
  fn = jax.jit(lambda a, k: conv2d(a, k, stride=2, padding=1, feature_group_count=2))
  want = conv2d_reference(x, kernel, (2, 2), ((1, 1), (1, 1)), (1, 1), groups=2)
  np.testing.assert_allclose(np.asarray(fn(x, kernel)), want, rtol=1e-5, atol=1e-5)


def test_normalize_padding_forms():
  assert normalize_padding("same") == "SAME"
  assert normalize_padding(2) == ((2, 2), (2, 2))
  assert normalize_padding((1, 3)) == ((1, 1), (3, 3))
  assert normalize_padding(((0, 1), (2, 3))) == ((0, 1), (2, 3))


@pytest.mark.parametrize("bad", ["full", (1, 2, 3)])
def test_normalize_padding_rejects(bad):
  with pytest.raises(ValueError, match="padding"):
    normalize_padding(bad)


def test_conv2d_rejects_bad_shapes():
  with pytest.raises(ValueError, match="channels"):
    conv2d(np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 2, 1), np.float32))
  with pytest.raises(ValueError, match="expects"):
    conv2d(np.zeros((4, 4, 3), np.float32), np.zeros((3, 3, 3, 1), np.float32))
