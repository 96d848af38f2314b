"""bilinear_kernel (FCN init) and resize_bilinear against numpy references."""

import jax
import numpy as np
import pytest

from seg_jax.ops import bilinear_kernel, conv_transpose, resize_bilinear


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 8])
def test_bilinear_kernel_matches_fcn_formula(size):
  channels = 3
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  want = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      want[i, j] = (1 - abs(i - center) / factor) * (1 - abs(j - center) / factor)
  got = np.asarray(bilinear_kernel(size, channels))
  assert got.shape == (size, size, channels, channels) and got.dtype == np.float32
  for c in range(channels):
    for o in range(channels):
      np.testing.assert_allclose(got[:, :, c, o], want if c == o else 0.0, rtol=1e-6, atol=0)


def _upsample_setup(factor):
  """Kernel 2f - f%2, stride f, padding ceil((f-1)/2): output exactly f times larger."""
  return 2 * factor - factor % 2, -(-(factor - 1) // 2)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_transposed_conv_with_bilinear_kernel_interpolates_linearly(factor):
  size, padding = _upsample_setup(factor)
  h, w = 7, 6
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  ramp = np.stack([2.0 * rows + 3.0 * cols + 1.0, -rows + 0.5 * cols], axis=-1)[None]
  y = np.asarray(conv_transpose(ramp.astype(np.float32), bilinear_kernel(size, 2),
                                stride=factor, padding=padding))
  assert y.shape == (1, h * factor, w * factor, 2)
  # Output pixel o sits at input coordinate (o + 0.5) / f - 0.5 (half-pixel centres), so
  # away from the zero-padded border a linear ramp stays the same linear ramp.
  src_r, src_c = np.meshgrid((np.arange(h * factor) + 0.5) / factor - 0.5,
                             (np.arange(w * factor) + 0.5) / factor - 0.5, indexing="ij")
  want = np.stack([2.0 * src_r + 3.0 * src_c + 1.0, -src_r + 0.5 * src_c], axis=-1)
  inner = (slice(factor, -factor), slice(factor, -factor))
  np.testing.assert_allclose(y[0][inner], want[inner], rtol=1e-5, atol=1e-5)
  # ... and on any image it is jax.image.resize's bilinear interpolation in the interior.
  img = np.random.default_rng(factor).normal(size=(1, h, w, 2)).astype(np.float32)
  y = conv_transpose(img, bilinear_kernel(size, 2), stride=factor, padding=padding)
  ref = jax.jit(jax.image.resize, static_argnums=(1, 2))(img, y.shape, "bilinear")
  np.testing.assert_allclose(np.asarray(y)[0][inner], np.asarray(ref)[0][inner], atol=1e-5)


def resize_reference(x, out_h, out_w, align_corners):
  """PyTorch's bilinear interpolate, one output pixel at a time."""
  n, h, w, c = x.shape

  def source(o, in_size, out_size):
    if align_corners:
      return o * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return max((o + 0.5) * in_size / out_size - 0.5, 0.0)

  y = np.zeros((n, out_h, out_w, c))
  for i in range(out_h):
    r = source(i, h, out_h)
    r0 = min(int(np.floor(r)), h - 1)
    r1, lr = min(r0 + 1, h - 1), r - r0
    for j in range(out_w):
      s = source(j, w, out_w)
      s0 = min(int(np.floor(s)), w - 1)
      s1, ls = min(s0 + 1, w - 1), s - s0
      y[:, i, j] = ((1 - lr) * ((1 - ls) * x[:, r0, s0] + ls * x[:, r0, s1])
                    + lr * ((1 - ls) * x[:, r1, s0] + ls * x[:, r1, s1]))
  return y


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_hw,out_hw", [((4, 5), (8, 10)), ((5, 3), (13, 7)), ((6, 6), (4, 3)),
                                          ((3, 4), (1, 9)), ((7, 2), (7, 5))])
def test_resize_bilinear_matches_reference(in_hw, out_hw, align_corners):
  x = np.random.default_rng(sum(in_hw + out_hw)).normal(size=(2,) + in_hw + (3,))
  got = resize_bilinear(x.astype(np.float32), out_hw, align_corners=align_corners)
  want = resize_reference(x, *out_hw, align_corners)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_hw,out_hw", [((4, 4), (8, 8)), ((5, 3), (16, 9)), ((3, 7), (4, 10))])
def test_half_pixel_upsampling_equals_jax_image_resize(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(1,) + in_hw + (2,)).astype(np.float32)
  got = jax.jit(lambda a: resize_bilinear(a, out_hw))(x)
  want = jax.jit(jax.image.resize, static_argnums=(1, 2))(x, (1,) + out_hw + (2,), "bilinear")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_align_corners_keeps_corners_and_grad_is_partition_of_unity():
  x = np.random.default_rng(1).normal(size=(1, 3, 4, 1)).astype(np.float32)
  y = resize_bilinear(x, (7, 9), align_corners=True)
  np.testing.assert_allclose(np.asarray(y)[0, [0, 0, -1, -1], [0, -1, 0, -1]],
                             x[0, [0, 0, -1, -1], [0, -1, 0, -1]], rtol=1e-6)
  # Interpolation weights of each output sum to one, so the gradient of the sum of all
  # outputs sums to the number of outputs.
  grad = jax.jit(jax.grad(lambda a: resize_bilinear(a, (7, 9)).sum()))(x)
  np.testing.assert_allclose(float(grad.sum()), 63.0, rtol=1e-6)


def test_resize_bilinear_rejects_bad_input():
  with pytest.raises(ValueError, match="size"):
    resize_bilinear(np.ones((1, 4, 4, 1)), (0, 3))
  with pytest.raises(ValueError, match="N, H, W, C"):
    resize_bilinear(np.ones((4, 4, 1)), (8, 8))
  with pytest.raises(ValueError, match="bilinear_kernel"):
    bilinear_kernel(0, 2)
