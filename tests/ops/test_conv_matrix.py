"""Convolution as a matrix; transposed convolution == its transpose == the input VJP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import conv2d
from seg_jax.ops.conv_matrix import conv_matrix, conv_transpose, conv_transpose_output_size


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


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


# -------------------------------------------------------------------------- conv_transpose


def scatter_reference(x, kernel, stride, padding, output_padding, dilation):
  """The definition: input pixel (h, w) adds x[h, w, c] * kernel[a, b, c, :] at
  (h*s + a*d - p, w*s + b*d - p) of the output."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
  oph, opw = _pair(output_padding)
  ho = conv_transpose_output_size(h, kh, sh, ph, oph, dh)
  wo = conv_transpose_output_size(w, kw, sw, pw, opw, dw)
  y = np.zeros((n, ho, wo, cout))
  for i in range(h):
    for j in range(w):
      for a in range(kh):
        for b in range(kw):
          r, c = i * sh + a * dh - ph, j * sw + b * dw - pw
          if 0 <= r < ho and 0 <= c < wo:
            y[:, r, c, :] += x[:, i, j, :] @ kernel[a, b]
  return y


def _transpose_cases():
  """Many (shape, kernel, stride, padding, output_padding, dilation) combinations."""
  rng = np.random.default_rng(1234)
  cases = []
  for stride in (1, 2, 3):
    for padding in (0, 1, 2):
      for dilation in (1, 2):
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(2, 5))  # often non-square
        max_op = max(stride, dilation) - 1
        op = int(rng.integers(0, max_op + 1))
        h, w = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        out = [conv_transpose_output_size(s, k, stride, padding, op, dilation)
               for s, k in ((h, kh), (w, kw))]
        if min(out) <= 0:
          kh = kw = 4
        cases.append(((h, w), (kh, kw), stride, padding, op, dilation))
  # Per-axis parameters and the edge cases: output_padding >= stride (allowed when
  # dilation > stride) and padding larger than dilation*(k-1) (negative lax padding).
  cases += [((3, 4), (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)),
            ((4, 3), (2, 3), 1, 0, 1, 2),
            ((5, 5), (2, 2), 3, 2, 2, 1),
            ((3, 3), (1, 1), 2, 0, 1, 1),
            # Large kernels with large padding (DeconvNet's 7x7 deconv_fc6 on a 4x4 map):
            # the sub-pixel path computes only the phase rows the crop keeps.
            ((4, 4), (7, 7), 1, 3, 0, 1),
            ((4, 5), (7, 5), 2, (5, 3), (1, 0), 1)]
  return cases


TRANSPOSE_CASES = _transpose_cases()


@pytest.mark.parametrize("spatial,ksize,stride,padding,output_padding,dilation", TRANSPOSE_CASES)
def test_conv_transpose_equals_scatter_matrix_transpose_and_vjp(
    spatial, ksize, stride, padding, output_padding, dilation):
  rng = np.random.default_rng(hash((spatial, ksize, str(stride))) % 2**32)
  cin, cout = 2, 3
  x = rng.normal(size=(2,) + spatial + (cin,)).astype(np.float32)
  kernel = rng.normal(size=ksize + (cin, cout)).astype(np.float32)
  kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
  # The convolution Cout -> Cin that uses the same kernel; conv_transpose is its transpose.
  fwd_kernel = kernel.transpose(0, 1, 3, 2)
  fwd = functools.partial(conv2d, kernel=jnp.asarray(fwd_kernel), stride=stride, padding=padding,
                          dilation=dilation)
  out_shape = jax.eval_shape(functools.partial(conv_transpose, **kw), x, kernel).shape
  fwd_out = jax.eval_shape(fwd, jax.ShapeDtypeStruct(out_shape, jnp.float32)).shape
  # fwd maps y's size back to at least x's size; when output_padding >= stride it returns
  # extra rows/columns, which the transposed conv never reads (so zero-pad x to match).
  assert fwd_out[1] >= spatial[0] and fwd_out[2] >= spatial[1]
  x_full = np.pad(x, ((0, 0), (0, fwd_out[1] - spatial[0]), (0, fwd_out[2] - spatial[1]), (0, 0)))

  @jax.jit  # one compilation per case keeps the test fast; the op itself is jit-compatible
  def ours_and_vjp(x, kernel, x_full):
    _, vjp = jax.vjp(fwd, jnp.zeros(out_shape, jnp.float32))
    return conv_transpose(x, kernel, **kw), vjp(x_full)[0]

  y, y_vjp = map(np.asarray, ours_and_vjp(x, kernel, x_full))

  # 1. The definition (numpy scatter-add loop).
  np.testing.assert_allclose(y, scatter_reference(x, kernel, **kw), rtol=1e-4, atol=1e-4)
  # 2. The lecture's statement: y = M^T x for the matrix M of the forward convolution.
  m = conv_matrix(fwd_kernel.astype(np.float64), y.shape[1:], stride=stride, padding=padding,
                  dilation=dilation)
  for n in range(x.shape[0]):
    np.testing.assert_allclose(y[n].ravel(), m.T @ x_full[n].ravel(), rtol=1e-4, atol=1e-4)
  # 3. The input-VJP of the forward convolution.
  np.testing.assert_allclose(y, y_vjp, rtol=1e-4, atol=1e-4)


def test_output_size_formula():
  assert conv_transpose_output_size(4, 4, 2, 1) == 8
  assert conv_transpose_output_size(5, 3, 2, 1, output_padding=1) == 10
  assert conv_transpose_output_size(3, 3, 1, 0, dilation=2) == 7
  y = conv_transpose(jnp.ones((1, 5, 6, 1)), jnp.ones((3, 2, 1, 1)), stride=(2, 3), padding=1,
                     output_padding=(1, 2))
  assert y.shape == (1, conv_transpose_output_size(5, 3, 2, 1, 1),
                     conv_transpose_output_size(6, 2, 3, 1, 2), 1)


def test_conv_transpose_is_one_conv_like_lax_conv_transpose():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 6, 5, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4, 3, 4, 3)), jnp.float32)
  fn = functools.partial(conv_transpose, stride=2, padding=1, output_padding=1,
                         implementation="dilated")
  jaxpr = jax.make_jaxpr(fn)(x, kernel).jaxpr
  prims = [eqn.primitive.name for eqn in jaxpr.eqns]
  assert prims.count("conv_general_dilated") == 1
  assert set(prims) <= {"conv_general_dilated", "rev", "convert_element_type"}
  # lax's own transposed convolution with the equivalent explicit padding.
  want = jax.lax.conv_transpose(x, kernel.transpose(0, 1, 3, 2), (2, 2), ((2, 3), (1, 2)),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
  np.testing.assert_allclose(np.asarray(fn(x, kernel)), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(stride=2, padding=0, output_padding=2), "output_padding"),
    (dict(stride=1, padding=0, output_padding=1), "output_padding"),
    (dict(stride=2, padding=3), "no output"),
    (dict(stride=0, padding=0), "stride"),
    (dict(stride=2, padding=-1), "padding"),
])
def test_conv_transpose_rejects_bad_arguments(kw, match):
  with pytest.raises(ValueError, match=match):
    conv_transpose(jnp.ones((1, 1, 1, 1)), jnp.ones((3, 3, 1, 1)), **kw)


def test_conv_transpose_rejects_channel_mismatch():
  with pytest.raises(ValueError, match="channels"):
    conv_transpose(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 1, 1)), stride=2, padding=1)


def test_package_exports_the_function_not_the_same_named_submodule():
  import importlib  # pylint: disable=g-import-not-at-top
  from seg_jax import ops  # pylint: disable=g-import-not-at-top
  importlib.import_module("seg_jax.ops.conv_matrix")  # binding the submodule must not shadow
  assert ops.conv_matrix is conv_matrix and ops.conv_transpose is conv_transpose
