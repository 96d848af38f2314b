"""Convolution as a matrix; :func:`seg_jax.ops.conv_transpose` equals its transpose."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import conv2d
from seg_jax.ops.conv_matrix import conv_matrix
from seg_jax.ops.conv_transpose import conv_transpose


# ----------------------------------------------------------------------------- conv_matrix


def test_lecture_1d_example():
  x, y, z = 1.5, -2.0, 7.0  # distinct values so every entry is identifiable
  got = conv_matrix(np.array([x, y, z]), (4,), stride=1, padding=1)
  want = np.array([[y, z, 0, 0], [x, y, z, 0], [0, x, y, z], [0, 0, x, y]])
  np.testing.assert_array_equal(got, want)
  letters = conv_matrix(np.array(["x", "y", "z"], dtype=object), (4,), padding=1)
  assert letters.tolist() == [["y", "z", 0, 0], ["x", "y", "z", 0], [0, "x", "y", "z"],
                              [0, 0, "x", "y"]]


@pytest.mark.parametrize("k,length,stride,padding,dilation", [
    (3, 4, 1, 1, 1), (3, 7, 2, 0, 1), (2, 6, 3, 2, 1), (3, 9, 1, 2, 2), (1, 5, 2, 0, 3),
    (4, 10, 2, (1, 2), 2),
])
def test_1d_matrix_matches_definition(k, length, stride, padding, dilation):
  rng = np.random.default_rng(k * 100 + length)
  kernel, signal = rng.normal(size=k), rng.normal(size=length)
  m = conv_matrix(kernel, (length,), stride=stride, padding=padding, dilation=dilation)
  low, high = (padding, padding) if isinstance(padding, int) else padding
  padded = np.pad(signal, (low, high))
  span = dilation * (k - 1) + 1
  want = [np.dot(padded[i:i + span:dilation], kernel)
          for i in range(0, len(padded) - span + 1, stride)]
  np.testing.assert_allclose(m @ signal, want, rtol=1e-12, atol=1e-12)


CONV_CASES = [
    # (input H, W, cin), kernel (kh, kw, cout), stride, padding, dilation
    ((5, 5, 1), (3, 3, 1), 1, 1, 1),
    ((6, 7, 2), (3, 2, 3), 2, 1, 1),
    ((7, 6, 3), (2, 3, 2), (1, 2), (2, 0), 1),
    ((8, 8, 2), (3, 3, 2), 3, 2, 2),
    ((9, 5, 1), (1, 3, 2), 2, ((1, 0), (0, 2)), (1, 2)),
    ((6, 6, 2), (4, 4, 1), 2, 0, 1),
]


@pytest.mark.parametrize("shape,kshape,stride,padding,dilation", CONV_CASES)
def test_2d_matrix_times_image_equals_conv2d(shape, kshape, stride, padding, dilation):
  rng = np.random.default_rng(sum(shape) + sum(kshape))
  kernel = rng.normal(size=kshape[:2] + (shape[2], kshape[2]))
  x = rng.normal(size=shape)
  m = conv_matrix(kernel, shape, stride=stride, padding=padding, dilation=dilation)
  pads = (((padding, padding),) * 2 if isinstance(padding, int) else
          tuple(p if isinstance(p, tuple) else (p, p) for p in padding))
  y = conv2d(jnp.asarray(x[None], jnp.float32), jnp.asarray(kernel, jnp.float32),
             stride=stride, padding=pads, dilation=dilation)[0]
  assert m.shape == (y.size, x.size)
  np.testing.assert_allclose(m @ x.ravel(), np.asarray(y).ravel(), rtol=1e-4, atol=1e-4)
  # Every entry is a kernel value or zero, and each kernel value appears (no tap is lost).
  assert set(np.unique(m)) <= set(kernel.ravel()) | {0.0}


def test_conv_matrix_jax_kernel_is_jittable_and_differentiable():
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
  build = jax.jit(functools.partial(conv_matrix, input_shape=(5, 5, 2), stride=2, padding=1))
  m = build(kernel)
  assert isinstance(m, jax.Array)
  np.testing.assert_allclose(np.asarray(m), conv_matrix(np.asarray(kernel), (5, 5, 2), stride=2,
                                                        padding=1), rtol=0, atol=0)
  # d(sum M)/d kernel[a,b,c,o] counts how often tap (a, b) is used: same for all (c, o).
  grad = jax.grad(lambda k: build(k).sum())(kernel)
  np.testing.assert_array_equal(grad[..., 0, 0], grad[..., 1, 1])
  assert float(grad[1, 1, 0, 0]) == 9.0  # centre tap used by all 3x3 outputs


def test_conv_matrix_rejects_bad_input():
  with pytest.raises(ValueError, match="input_shape"):
    conv_matrix(np.ones((3, 3, 2, 1)), (5, 5, 3))
  with pytest.raises(ValueError, match="too small"):
    conv_matrix(np.ones(5), (3,))
  with pytest.raises(ValueError, match="padding"):
    conv_matrix(np.ones(3), (4,), padding="SAME")


# --------------------------------------------------- the transposed convolution is M.T


MATRIX_TRANSPOSE_CASES = [  # spatial, kernel, stride, padding, output_padding, dilation
    ((4, 5), (3, 3), 1, 1, 0, 1), ((3, 4), (4, 2), 2, 1, 1, 1), ((3, 3), (3, 2), 3, 2, 2, 2),
    ((3, 4), (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)), ((4, 3), (2, 3), 1, 0, 1, 2),
    ((5, 5), (2, 2), 3, 2, 2, 1), ((4, 4), (7, 7), 1, 3, 0, 1),
    ((4, 5), (7, 5), 2, (5, 3), (1, 0), 1),
]


@pytest.mark.parametrize("implementation", ["dilated", "subpixel"])
@pytest.mark.parametrize("spatial,ksize,stride,padding,output_padding,dilation",
                         MATRIX_TRANSPOSE_CASES)
def test_conv_transpose_equals_matrix_transpose(spatial, ksize, stride, padding, output_padding,
                                                dilation, implementation):
  """The lecture's statement: ``conv_transpose(x) == M.T @ x`` for the matrix ``M`` of the
  strided convolution ``Cout -> Cin`` with the same kernel."""
  rng = np.random.default_rng(sum(spatial) * 10 + sum(ksize))
  cin, cout = 2, 3
  x = rng.normal(size=(2,) + spatial + (cin,)).astype(np.float32)
  kernel = rng.normal(size=ksize + (cin, cout)).astype(np.float32)
  y = np.asarray(conv_transpose(jnp.asarray(x), jnp.asarray(kernel), stride=stride,
                                padding=padding, output_padding=output_padding,
                                dilation=dilation, implementation=implementation))
  m = conv_matrix(kernel.transpose(0, 1, 3, 2).astype(np.float64), y.shape[1:], stride=stride,
                  padding=padding, dilation=dilation)
  # M maps y's size back to at least x's size; with output_padding >= stride it has extra
  # rows, which the transposed convolution never reads (so x is zero-padded to match).
  conv_out = jax.eval_shape(functools.partial(
      conv2d, stride=stride, padding=padding, dilation=dilation),
      jax.ShapeDtypeStruct((1,) + y.shape[1:], jnp.float32),
      jax.ShapeDtypeStruct(ksize + (cout, cin), jnp.float32)).shape
  assert conv_out[1] >= spatial[0] and conv_out[2] >= spatial[1]
  x_full = np.pad(x, ((0, 0), (0, conv_out[1] - spatial[0]), (0, conv_out[2] - spatial[1]),
                      (0, 0)))
  for n in range(x.shape[0]):
    np.testing.assert_allclose(y[n].ravel(), m.T @ x_full[n].ravel(), rtol=1e-4, atol=1e-4)
