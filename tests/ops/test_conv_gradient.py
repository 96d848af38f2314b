"""The CPU-fast convolution (custom VJP, GEMM kernel gradient) against XLA's native gradients
and against a numpy loop for the kernel gradient."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops.conv import (_gemm_passes, conv2d, conv_implementation, input_gradient_gemm,
                             kernel_gradient_gemm)

CASES = [  # stride, padding, dilation, kernel size
    (1, 1, 1, (3, 3)), (2, 0, 1, (3, 3)), (2, "SAME", 2, (3, 3)), (1, "VALID", 1, (1, 1)),
    (3, ((1, 2), (0, 1)), 1, (2, 3)), (2, 2, 3, (5, 5)), ((1, 2), (0, 1), (2, 1), (3, 2)),
    (2, 1, 1, (4, 4)), (1, 100, 1, (3, 3)), (1, "VALID", 1, (7, 7)), (2, 2, 1, (5, 5)),
    ((2, 3), ((3, 1), (0, 2)), (1, 2), (5, 4)),
]


def _loss(x, kernel, implementation, stride, padding, dilation):
  y = conv2d(x, kernel, stride=stride, padding=padding, dilation=dilation,
             implementation=implementation)
  return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


@pytest.mark.parametrize("stride,padding,dilation,ksize", CASES)
def test_gemm_gradients_equal_native(stride, padding, dilation, ksize):
  keys = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(keys[0], (2, 11, 13, 3))
  kernel = jax.random.normal(keys[1], (*ksize, 3, 4))
  grads = {}
  for impl in ("native", "gemm", "auto"):
    fn = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)), static_argnums=(2, 3, 4, 5))
    grads[impl] = fn(x, kernel, impl, stride, padding, dilation)
  v_native, (dx_native, dk_native) = grads["native"]
  for impl in ("gemm", "auto"):
    v_gemm, (dx_gemm, dk_gemm) = grads[impl]
    np.testing.assert_allclose(v_gemm, v_native, rtol=1e-5)  # GEMM forward: other rounding
    np.testing.assert_allclose(dx_gemm, dx_native, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dk_gemm, dk_native, rtol=1e-5, atol=1e-4)


def test_kernel_gradient_matches_numpy_loop():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
  stride, pad, dil, (kh, kw) = (2, 1), ((1, 0), (2, 1)), (1, 2), (3, 2)
  ho = (7 + 1 + 0 - dil[0] * (kh - 1) - 1) // stride[0] + 1
  wo = (6 + 2 + 1 - dil[1] * (kw - 1) - 1) // stride[1] + 1
  dy = rng.normal(size=(2, ho, wo, 5)).astype(np.float32)
  padded = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  expected = np.zeros((kh, kw, 3, 5))
  for a, b, i, j in itertools.product(range(kh), range(kw), range(ho), range(wo)):
    patch = padded[:, i * stride[0] + a * dil[0], j * stride[1] + b * dil[1], :]  # (N, C)
    expected[a, b] += patch.T @ dy[:, i, j, :]
  got = kernel_gradient_gemm(jnp.asarray(x), jnp.asarray(dy), (kh, kw, 3, 5), stride, pad, dil)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_keep_kernel_dtype_and_implementation_choice(monkeypatch):
  x = jnp.ones((1, 5, 5, 2), jnp.bfloat16)
  kernel = jnp.ones((3, 3, 2, 2), jnp.bfloat16)
  loss = lambda k: conv2d(x, k, padding=1, implementation="gemm").sum().astype(jnp.float32)
  dk = jax.grad(loss)(kernel)
  assert dk.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dk, np.float32)[1, 1], 25.0)
  monkeypatch.setenv("SEG_JAX_CONV_IMPL", "native")
  assert conv_implementation() == "native"
  monkeypatch.setenv("SEG_JAX_CONV_IMPL", "fast")
  with pytest.raises(ValueError, match="SEG_JAX_CONV_IMPL"):
    conv_implementation()


def test_input_gradient_matches_numpy_loop():
  rng = np.random.default_rng(1)
  x_shape, stride, pad, dil, (kh, kw) = (2, 9, 8, 3), (2, 1), ((1, 2), (0, 3)), (1, 2), (5, 3)
  ho = (9 + 3 - dil[0] * (kh - 1) - 1) // stride[0] + 1
  wo = (8 + 3 - dil[1] * (kw - 1) - 1) // stride[1] + 1
  kernel = rng.normal(size=(kh, kw, 3, 4)).astype(np.float32)
  dy = rng.normal(size=(2, ho, wo, 4)).astype(np.float32)
  padded = np.zeros((2, 9 + 3, 8 + 3, 3))
  for a, b, i, j in itertools.product(range(kh), range(kw), range(ho), range(wo)):
    row, col = i * stride[0] + a * dil[0], j * stride[1] + b * dil[1]
    padded[:, row, col] += dy[:, i, j] @ kernel[a, b].T
  expected = padded[:, 1:10, 0:8]
  got = input_gradient_gemm(jnp.asarray(dy), jnp.asarray(kernel), x_shape, stride, pad, dil)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_auto_uses_gemm_only_where_it_pays():
  # (forward, kernel gradient, input gradient)
  assert _gemm_passes("auto", (4, 11, 11, 256), (7, 7, 256, 64), (4, 5, 5, 64)) == (
      True, True, True)
  assert _gemm_passes("auto", (4, 64, 64, 3), (3, 3, 3, 32), (4, 64, 64, 32)) == (
      False, True, False)
  assert _gemm_passes("auto", (4, 128, 128, 64), (3, 3, 64, 32), (4, 128, 128, 32)) == (
      False, False, False)
  assert _gemm_passes("native", (4, 11, 11, 256), (7, 7, 256, 64), (4, 5, 5, 64)) == (
      False, False, False)
  assert _gemm_passes("auto", (8, 64, 64, 3), (7, 7, 3, 16), (8, 32, 32, 16)) == (
      False, True, True)  # RGB stem: native forward


@pytest.mark.parametrize("stride,padding,dilation", [(1, 3, 1), (2, ((1, 2), (3, 6)), (1, 2))])
def test_forward_gemm_equals_native(stride, padding, dilation):
  """A large kernel on a small map (DeconvNet's fc6 shape, scaled down) runs as one GEMM."""
  keys = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(keys[0], (2, 4, 5, 16))
  kernel = jax.random.normal(keys[1], (7, 7, 16, 8))
  run = lambda impl: jax.jit(functools.partial(
      conv2d, stride=stride, padding=padding, dilation=dilation, implementation=impl))(
          x, kernel)
  np.testing.assert_allclose(run("auto"), run("native"), rtol=1e-5, atol=1e-4)
  jaxpr = str(jax.make_jaxpr(functools.partial(conv2d, stride=stride, padding=padding,
                                               dilation=dilation, implementation="auto"))(
                                                   x, kernel))
  assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr

