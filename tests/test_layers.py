"""seg_jax.layers: Conv, ConvBNReLU and ConvTranspose against the ops they wrap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import layers
from seg_jax.ops import bilinear_kernel, conv2d, conv_transpose

X = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)




@pytest.fixture(autouse=True)
def _fast_random_compiles():
  # With partitionable threefry, compiling each jax.random call takes ~2 s of CPU here;
  # the non-partitionable variant compiles ~5x faster (scoped to these tests only).
  with jax.threefry_partitionable(False):
    yield


def _numpy_init(seed):
  """Deterministic initializer without jax.random (nothing random to compile)."""
  return lambda key, shape, dtype=jnp.float32: jnp.asarray(
      np.random.default_rng(seed).normal(size=shape), dtype)


def _init(layer, x=X, seed=0):
  """Jitted init: one compilation instead of many small eager ones (keeps the test fast)."""
  return jax.jit(layer.init)(jax.random.key(seed), x)


def test_conv_equals_conv2d_plus_bias():
  layer = layers.Conv(4, kernel_size=(3, 2), strides=2, padding=1,
                      kernel_init=_numpy_init(1), bias_init=_numpy_init(2))
  params = _init(layer)["params"]
  assert params["kernel"].shape == (3, 2, 3, 4)
  want = conv2d(X, params["kernel"], stride=2, padding=1) + params["bias"]
  np.testing.assert_allclose(layer.apply({"params": params}, X), want, rtol=1e-6, atol=1e-6)


def test_conv_bn_relu_trains_batch_stats():
  layer = layers.ConvBNReLU(4)
  variables = _init(layer)
  y, updates = jax.jit(lambda v, x: layer.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, X)
  assert y.shape == (2, 5, 6, 4) and float(y.min()) >= 0.0
  assert not np.allclose(updates["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


def test_conv_bn_relu_block_equals_conv_then_batch_norm_then_relu():
  """The shared block: parameter names, no conv bias under BN, and the numbers of a
  hand-written conv2d -> batch statistics normalisation -> ReLU."""
  layer = layers.ConvBNReLU(4, kernel_size=3, padding=1)
  variables = _init(layer)
  assert set(variables["params"]) == {"Conv_0", "BatchNorm_0"}
  assert set(variables["params"]["Conv_0"]) == {"kernel"}
  y, _ = layer.apply(variables, X, train=True, mutable=["batch_stats"])
  z = np.asarray(conv2d(X, variables["params"]["Conv_0"]["kernel"], padding=1), np.float64)
  mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
  want = np.maximum((z - mean) / np.sqrt(var + 1e-5), 0.0)  # scale 1, bias 0 at init
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_scale_channels_rounds_and_keeps_one():
  assert [layers.scale_channels(c, w) for c, w in ((64, 1.0), (64, 0.125), (512, 0.3),
                                                   (3, 0.01), (100, 0.005))] == [64, 8, 154, 1, 1]


@pytest.mark.parametrize("kernel_size,strides,padding,output_padding,dilation", [
    (4, 2, 1, 0, 1), ((3, 2), (2, 3), (1, 0), (1, 2), 1), (3, 1, 1, 1, 2),
])
def test_conv_transpose_layer_equals_op(kernel_size, strides, padding, output_padding, dilation):
  layer = layers.ConvTranspose(5, kernel_size, strides, padding=padding,
                               output_padding=output_padding, dilation=dilation,
                               kernel_init=_numpy_init(3), bias_init=_numpy_init(4))
  params = _init(layer, seed=1)["params"]
  ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
  assert params["kernel"].shape == ks + (3, 5)
  want = conv_transpose(X, params["kernel"], stride=strides, padding=padding,
                        output_padding=output_padding, dilation=dilation) + params["bias"]
  np.testing.assert_allclose(layer.apply({"params": params}, X), want, rtol=1e-5, atol=1e-5)


def _grads(layer, x):
  params = _init(layer, x)["params"]
  loss = lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2)
  return params, jax.jit(jax.grad(loss))(params)


def test_bilinear_init_and_fixed_kernel_has_zero_gradient():
  layer = layers.ConvTranspose(3, 4, 2, padding=1, bilinear_init=True, trainable=False)
  params, grads = _grads(layer, X)
  np.testing.assert_array_equal(params["kernel"], bilinear_kernel(4, 3))
  np.testing.assert_array_equal(grads["kernel"], 0.0)
  assert float(jnp.abs(grads["bias"]).sum()) > 0.0  # the bias (if any) still trains
  y = layer.apply({"params": params}, X)
  assert y.shape == (2, 10, 12, 3)
  np.testing.assert_allclose(y, conv_transpose(X, bilinear_kernel(4, 3), stride=2, padding=1),
                             rtol=1e-6, atol=1e-6)
  trainable = layers.ConvTranspose(3, 4, 2, padding=1, bilinear_init=True)
  _, trainable_grads = _grads(trainable, X)
  assert float(jnp.abs(trainable_grads["kernel"]).sum()) > 0.0


def test_bilinear_init_rejects_channel_change_and_non_square():
  with pytest.raises(ValueError, match="Cin == features"):
    layers.ConvTranspose(4, 4, 2, padding=1, bilinear_init=True).init(jax.random.key(0), X)
  with pytest.raises(ValueError, match="square"):
    layers.ConvTranspose(3, (4, 2), 2, bilinear_init=True).init(jax.random.key(0), X)


def test_conv_transpose_layer_bfloat16_compute():
  layer = layers.ConvTranspose(2, 2, 2, dtype=jnp.bfloat16, use_bias=False,
                               kernel_init=_numpy_init(5))
  params = _init(layer)["params"]
  y = layer.apply({"params": params}, X)
  assert params["kernel"].dtype == jnp.float32 and y.dtype == jnp.bfloat16
  assert y.shape == (2, 10, 12, 2)
