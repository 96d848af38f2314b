"""Transposed convolution (PyTorch semantics) against a numpy scatter loop, the input VJP of
the forward convolution and ``lax.conv_transpose``; both implementations give the same numbers."""

import functools
import importlib
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import ops
from seg_jax.ops import conv2d
from seg_jax.ops.conv_matrix import conv_matrix
from seg_jax.ops.conv_transpose import conv_transpose, conv_transpose_output_size

IMPLEMENTATIONS = ("dilated", "subpixel")


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


def scatter_reference(x, kernel, stride, padding, output_padding, dilation):
  """The definition: input pixel (h, w) adds x[h, w, c] * kernel[a, b, c, :] at
  (h*s + a*d - p, w*s + b*d - p) of the output."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
  oph, opw = _pair(output_padding)
  ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1  # PyTorch's documented formula
  wo = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
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


@pytest.mark.parametrize("spatial,ksize,stride,padding,output_padding,dilation",
                         _transpose_cases())
def test_conv_transpose_equals_scatter_and_vjp(spatial, ksize, stride, padding, output_padding,
                                               dilation):
  rng = np.random.default_rng(hash((spatial, ksize, str(stride))) % 2**32)
  cin, cout = 2, 3
  x = rng.normal(size=(2,) + spatial + (cin,)).astype(np.float32)
  kernel = rng.normal(size=ksize + (cin, cout)).astype(np.float32)
  kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
  # The convolution Cout -> Cin that uses the same kernel; conv_transpose is its transpose.
  fwd = functools.partial(conv2d, kernel=jnp.asarray(kernel.transpose(0, 1, 3, 2)),
                          stride=stride, padding=padding, dilation=dilation)
  out_shape = jax.eval_shape(functools.partial(conv_transpose, **kw), x, kernel).shape
  fwd_out = jax.eval_shape(fwd, jax.ShapeDtypeStruct(out_shape, jnp.float32)).shape
  # fwd maps y's size back to at least x's size; when output_padding >= stride it returns
  # extra rows/columns, which the transposed conv never reads (so zero-pad x to match).
  assert fwd_out[1] >= spatial[0] and fwd_out[2] >= spatial[1]
  x_full = np.pad(x, ((0, 0), (0, fwd_out[1] - spatial[0]), (0, fwd_out[2] - spatial[1]), (0, 0)))

  @jax.jit  # one compilation per case keeps the test fast; the op itself is jit-compatible
  def both_and_vjp(x, kernel, x_full):
    _, vjp = jax.vjp(fwd, jnp.zeros(out_shape, jnp.float32))
    ours = [conv_transpose(x, kernel, implementation=impl, **kw) for impl in IMPLEMENTATIONS]
    return ours, vjp(x_full)[0]

  ours, y_vjp = both_and_vjp(x, kernel, x_full)
  want = scatter_reference(x, kernel, **kw)
  for impl, y in zip(IMPLEMENTATIONS, ours):
    assert y.shape == out_shape, impl
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4, err_msg=impl)
  # The input-VJP of the forward convolution.
  np.testing.assert_allclose(np.asarray(y_vjp), want, rtol=1e-4, atol=1e-4)


SUBPIXEL_CASES = [  # spatial, kernel, stride, padding, output_padding
    ((5, 6), (2, 2), (2, 2), (0, 0), (0, 0)), ((5, 6), (4, 4), (2, 2), (1, 1), (0, 0)),
    ((3, 4), (16, 16), (8, 8), (4, 4), (0, 0)), ((5, 6), (3, 2), (2, 3), (1, 1), (1, 2)),
    ((4, 4), (3, 3), (1, 1), (1, 1), (0, 0)), ((3, 3), (5, 5), (3, 2), (2, 0), (2, 1)),
    ((4, 4), (1, 1), (2, 2), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("spatial,ksize,stride,padding,output_padding", SUBPIXEL_CASES)
def test_subpixel_matches_scatter_loop(spatial, ksize, stride, padding, output_padding):
  """The sub-pixel path on the shapes the models use (U-Net's 2x2/2, FCN's 16x16/8)."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, *spatial, 3)).astype(np.float32)
  kernel = rng.normal(size=(*ksize, 3, 2)).astype(np.float32)
  full = np.zeros((2, (spatial[0] - 1) * stride[0] + ksize[0] + output_padding[0],
                   (spatial[1] - 1) * stride[1] + ksize[1] + output_padding[1], 2))
  for h, w, a, b in itertools.product(range(spatial[0]), range(spatial[1]), range(ksize[0]),
                                      range(ksize[1])):
    full[:, h * stride[0] + a, w * stride[1] + b] += x[:, h, w] @ kernel[a, b]
  expected = full[:, padding[0]:full.shape[1] - padding[0],
                  padding[1]:full.shape[2] - padding[1]]
  got = conv_transpose(jnp.asarray(x), jnp.asarray(kernel), stride=stride, padding=padding,
                       output_padding=output_padding, implementation="subpixel")
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


class ConvTransposeVariantsTest(chex.TestCase):
  """The same numbers with and without jit (arguments are static Python values)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree_with_scatter(self):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    fn = self.variant(functools.partial(conv_transpose, stride=2, padding=1, output_padding=1))
    np.testing.assert_allclose(fn(x, kernel), scatter_reference(x, kernel, 2, 1, 1, 1),
                               rtol=1e-4, atol=1e-4)


def test_default_implementation_follows_conv_impl(monkeypatch):
  x, kernel = jnp.ones((1, 3, 3, 1)), jnp.ones((2, 2, 1, 1))
  fn = functools.partial(conv_transpose, stride=2, padding=0)
  monkeypatch.setenv("SEG_JAX_CONV_IMPL", "native")
  native = [e.primitive.name for e in jax.make_jaxpr(fn)(x, kernel).jaxpr.eqns]
  assert "conv_general_dilated" in native
  monkeypatch.setenv("SEG_JAX_CONV_IMPL", "auto")
  np.testing.assert_array_equal(fn(x, kernel), jax.jit(fn)(x, kernel))


def test_output_size_formula():
  assert conv_transpose_output_size(4, 4, 2, 1) == 8
  assert conv_transpose_output_size(5, 3, 2, 1, output_padding=1) == 10
  assert conv_transpose_output_size(3, 3, 1, 0, dilation=2) == 7
  y = conv_transpose(jnp.ones((1, 5, 6, 1)), jnp.ones((3, 2, 1, 1)), stride=(2, 3), padding=1,
                     output_padding=(1, 2))
  assert y.shape == (1, conv_transpose_output_size(5, 3, 2, 1, 1),
                     conv_transpose_output_size(6, 2, 3, 1, 2), 1)


def test_dilated_is_one_conv_like_lax_conv_transpose():
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
    (dict(stride=2, padding=0, implementation="fft"), "implementation"),
])
def test_conv_transpose_rejects_bad_arguments(kw, match):
  with pytest.raises(ValueError, match=match):
    conv_transpose(jnp.ones((1, 1, 1, 1)), jnp.ones((3, 3, 1, 1)), **kw)


def test_conv_transpose_rejects_channel_mismatch():
  with pytest.raises(ValueError, match="channels"):
    conv_transpose(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 1, 1)), stride=2, padding=1)


def test_package_exports_the_functions_not_the_same_named_submodules():
  importlib.import_module("seg_jax.ops.conv_matrix")  # binding the submodule must not shadow
  importlib.import_module("seg_jax.ops.conv_transpose")
  assert ops.conv_matrix is conv_matrix and ops.conv_transpose is conv_transpose
