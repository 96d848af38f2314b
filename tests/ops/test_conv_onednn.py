"""The oneDNN convolutions (seg_jax.ops.onednn, through XLA's FFI) against
``lax.conv_general_dilated`` and its ``jax.vjp``: forward pass, input gradient and kernel
gradient, directly and through ``conv2d``'s custom VJP, inside jit, scan, while_loop and vmap."""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from seg_jax.ops import conv, onednn
from seg_jax.ops.conv import conv2d

pytestmark = pytest.mark.usefixtures("fast_compile")
needs_onednn = pytest.mark.skipif(not onednn.available(), reason=onednn.info())

CASES = [  # x shape (N, H, W, C), kernel (kh, kw), cout, stride, pads ((t, b), (l, r)), dilation
    ((2, 9, 11, 5), (3, 3), 7, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((3, 13, 10, 4), (3, 3), 6, (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((2, 12, 9, 3), (3, 3), 4, (2, 1), ((1, 2), (0, 3)), (2, 1)),
    ((1, 7, 8, 16), (1, 1), 8, (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((2, 11, 11, 6), (1, 1), 5, (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((2, 15, 17, 3), (7, 7), 8, (2, 2), ((3, 3), (3, 3)), (1, 1)),
    ((2, 5, 6, 16), (7, 7), 9, (1, 1), ((3, 2), (4, 1)), (1, 1)),
    ((1, 10, 10, 8), (3, 3), 8, (1, 1), ((2, 2), (2, 2)), (2, 2)),
    ((2, 8, 9, 4), (5, 3), 3, (3, 2), ((2, 0), (1, 2)), (1, 2)),
    ((1, 4, 4, 8), (3, 3), 4, (1, 1), ((10, 7), (5, 9)), (1, 1)),
    ((2, 6, 5, 3), (3, 3), 4, (1, 1), ((20, 20), (20, 20)), (1, 1)),  # FCN's conv1_1 (pad 100)
    ((1, 5, 7, 3), (3, 3), 4, (2, 1), ((6, 2), (1, 5)), (2, 1)),
]


def _reference(x, kernel, stride, pads, dilation):
  return lax.conv_general_dilated(x, kernel, stride, pads, rhs_dilation=dilation,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


def _operands(x_shape, ksize, cout, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], x_shape)
  kernel = jax.random.normal(keys[1], (*ksize, x_shape[-1], cout))
  return x, kernel, keys[2]


def _close(got, want):
  scale = float(jnp.max(jnp.abs(want))) + 1.0
  # float32 sums in another order (oneDNN, GEMM or XLA): rounding differences only
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5 * scale)


@needs_onednn
@pytest.mark.parametrize("x_shape,ksize,cout,stride,pads,dilation", CASES)
def test_passes_equal_xla(x_shape, ksize, cout, stride, pads, dilation):
  x, kernel, key = _operands(x_shape, ksize, cout)
  y, vjp = jax.vjp(functools.partial(_reference, stride=stride, pads=pads, dilation=dilation),
                   x, kernel)
  dy = jax.random.normal(key, y.shape)
  dx, dk = vjp(dy)
  passes = jax.jit(lambda x, kernel, dy: (
      onednn.forward(x, kernel, y.shape, stride, pads, dilation),
      onednn.input_gradient(dy, kernel, x.shape, stride, pads, dilation),
      onednn.kernel_gradient(x, dy, kernel.shape, stride, pads, dilation)))
  for got, want in zip(passes(x, kernel, dy), (y, dx, dk)):
    _close(got, want)


def _loss(x, kernel, implementation, stride, padding, dilation):
  y = conv2d(x, kernel, stride=stride, padding=padding, dilation=dilation,
             implementation=implementation)
  return jnp.sum(jnp.sin(y) * jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape))


@needs_onednn
@pytest.mark.parametrize("stride,padding,dilation,ksize", [
    (1, 1, 1, (3, 3)), (2, "SAME", 1, (3, 3)), (1, "VALID", 1, (1, 1)),
    ((2, 1), ((1, 2), (0, 1)), (1, 2), (3, 2)), (2, 3, 1, (7, 7))])
def test_conv2d_gradients_equal_native(stride, padding, dilation, ksize):
  x, kernel, _ = _operands((2, 11, 13, 5), ksize, 4, seed=1)
  grad = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)), static_argnums=(2, 3, 4, 5))
  want = grad(x, kernel, "native", stride, padding, dilation)
  for implementation in ("onednn", "auto"):
    got = grad(x, kernel, implementation, stride, padding, dilation)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      _close(g, w)


@needs_onednn
def test_inside_scan_and_while_loop():
  """Gradient steps on the input (as in Gatys' L-BFGS) inside lax control flow."""
  x, kernel, _ = _operands((2, 10, 9, 4), (3, 3), 6, seed=2)

  def descend(implementation, loop):
    step = jax.grad(lambda x_: _loss(x_, kernel, implementation, 1, 1, 1))
    if loop == "scan":
      return lax.scan(lambda x_, _: (x_ - 0.1 * step(x_), None), x, None, length=3)[0]
    return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] - 0.1 * step(c[1])),
                          (0, x))[1]

  for loop in ("scan", "while"):
    want = jax.jit(descend, static_argnums=(0, 1))("native", loop)
    got = jax.jit(descend, static_argnums=(0, 1))("onednn", loop)
    _close(got, want)


@needs_onednn
def test_vmap_runs_each_convolution():
  x, kernel, _ = _operands((3, 2, 8, 8, 4), (3, 3), 5, seed=3)
  kernel = jnp.stack([kernel, 2 * kernel, -kernel])
  got = jax.vmap(lambda a, b: conv2d(a, b, padding=1, implementation="onednn"))(x, kernel)
  want = jax.vmap(lambda a, b: _reference(a, b, (1, 1), ((1, 1), (1, 1)), (1, 1)))(x, kernel)
  _close(got, want)


@needs_onednn
def test_auto_uses_onednn_where_native_would_run(monkeypatch):
  x, kernel, _ = _operands((2, 16, 16, 8), (3, 3), 8)
  assert conv._passes("auto", x, kernel, ((1, 1), (1, 1)), (2, 16, 16, 8)) == (
      "onednn", "onednn", "onednn")
  rgb, rgb_kernel, _ = _operands((2, 16, 16, 3), (3, 3), 8)  # XLA's input gradient is faster
  assert conv._passes("auto", rgb, rgb_kernel, ((1, 1), (1, 1)), (2, 16, 16, 8)) == (
      "onednn", "onednn", "native")
  fc6 = (jnp.ones((2, 11, 11, 16)), jnp.ones((7, 7, 16, 8)))  # GEMMs: large kernel, small map
  assert conv._passes("auto", *fc6, ((0, 0), (0, 0)), (2, 5, 5, 8)) == ("gemm",) * 3
  fc7 = (jnp.ones((2, 5, 5, 32)), jnp.ones((1, 1, 32, 32)))  # GEMMs: under 64 pixels
  assert conv._passes("auto", *fc7, ((0, 0), (0, 0)), (2, 5, 5, 32)) == ("gemm",) * 3
  half = x.astype(jnp.bfloat16)  # float32 only
  assert "onednn" not in conv._passes("auto", half, kernel.astype(jnp.bfloat16),
                                      ((1, 1), (1, 1)), (2, 16, 16, 8))
  jaxpr = str(jax.make_jaxpr(lambda a, b: conv2d(a, b, padding=1))(x, kernel))
  assert "conv_general_dilated" not in jaxpr
  monkeypatch.setenv("SEG_JAX_CONV_IMPL", "native")
  jaxpr = str(jax.make_jaxpr(lambda a, b: conv2d(a, b, padding=1))(x, kernel))
  assert "conv_general_dilated" in jaxpr


def test_without_the_extension_conv2d_falls_back_to_xla(monkeypatch):
  monkeypatch.setattr(onednn, "_onednn_conv", None)
  monkeypatch.setattr(onednn, "_UNAVAILABLE", "not built (test)")
  assert not onednn.available() and "off" in onednn.info() and "not built" in onednn.info()
  x, kernel, _ = _operands((1, 6, 6, 4), (3, 3), 4)
  np.testing.assert_allclose(conv2d(x, kernel, padding=1, implementation="auto"),
                             _reference(x, kernel, (1, 1), ((1, 1), (1, 1)), (1, 1)),
                             rtol=1e-5, atol=1e-4)
  with pytest.raises(RuntimeError, match="onednn.*not built"):
    conv2d(x, kernel, padding=1, implementation="onednn")
