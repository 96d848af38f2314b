"""Small shared Flax pieces used by every model.

All convolutions go through :func:`seg_jax.ops.conv2d` so there is one place that
chooses the convolution implementation for the backend. :func:`scale_channels` is the one
``width``-multiplier rule and :func:`conv_bn_relu` the one conv [+ BatchNorm] + ReLU block
(:class:`ConvBNReLU` is the same block as a module).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.ops.conv import Padding, conv2d
from seg_jax.ops.conv_transpose import conv_transpose
from seg_jax.ops.spatial import as_pair
from seg_jax.ops.upsample import bilinear_kernel

Dtype = Any
Initializer = Callable[..., jax.Array]


def scale_channels(channels: int, width: float) -> int:
  """Channel count under the ``width`` multiplier: rounded, at least one channel."""
  return max(1, int(round(channels * width)))


class Conv(nn.Module):
  """2-D convolution, NHWC activations and an HWIO ``kernel`` parameter.

  ``padding`` accepts 'SAME', 'VALID', an int, a pair or explicit pairs.
  """
  features: int
  kernel_size: Union[int, Sequence[int]] = 3
  strides: Union[int, Sequence[int]] = 1
  padding: Padding = "SAME"
  dilation: Union[int, Sequence[int]] = 1
  use_bias: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = as_pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or x.dtype
    y = conv2d(x.astype(dtype), kernel.astype(dtype), stride=self.strides,
               padding=self.padding, dilation=self.dilation)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y


class ConvBNReLU(nn.Module):
  """Conv (no bias) -> BatchNorm -> ReLU, the building block of U-Net and the baselines.

  :func:`conv_bn_relu` as a module (children ``Conv_0`` and ``BatchNorm_0``).
  ``bn_axis_name`` names the device axis over which batch statistics are averaged
  under ``pmap`` (under ``jit`` with sharded batches XLA averages them already).
  """
  features: int
  kernel_size: Union[int, Sequence[int]] = 3
  padding: Padding = "SAME"
  use_batch_norm: bool = True
  bn_axis_name: Optional[str] = None
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _, y = conv_bn_relu(x, self.features, None, batch_norm=self.use_batch_norm, train=train,
                        bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                        kernel_size=self.kernel_size, padding=self.padding)
    return y


class ConvTranspose(nn.Module):
  """Transposed convolution with PyTorch semantics (:func:`seg_jax.ops.conv_transpose`).

  The ``kernel`` parameter is ``(kh, kw, Cin, Cout)``. ``bilinear_init=True`` initialises
  it to :func:`seg_jax.ops.bilinear_kernel` (needs a square kernel and ``Cin == features``):
  with ``kernel_size=2f, strides=f, padding=f//2`` (even ``f``) it upsamples by ``f``
  bilinearly. ``trainable=False`` wraps the kernel in ``stop_gradient`` so its gradient
  is zero, like FCN's fixed final upsampling (the bias, if any, still trains); exclude it
  from decoupled weight decay too (e.g. ``optax.masked``), which ignores gradients.
  """
  features: int
  kernel_size: Union[int, Sequence[int]]
  strides: Union[int, Sequence[int]]
  padding: Union[int, Sequence[int]] = 0
  output_padding: Union[int, Sequence[int]] = 0
  dilation: Union[int, Sequence[int]] = 1
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  bilinear_init: bool = False
  trainable: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = as_pair(self.kernel_size, "kernel_size")
    shape = (kh, kw, x.shape[-1], self.features)
    if self.bilinear_init:
      if kh != kw or x.shape[-1] != self.features:
        raise ValueError(f"ConvTranspose bilinear_init needs a square kernel and Cin == features; "
                         f"got kernel {(kh, kw)}, Cin {x.shape[-1]}, features {self.features}")
      init = lambda key, shape, dtype: bilinear_kernel(shape[0], shape[2], dtype)
    else:
      init = self.kernel_init
    kernel = self.param("kernel", init, shape, self.param_dtype)
    if not self.trainable:
      kernel = jax.lax.stop_gradient(kernel)
    dtype = self.dtype or x.dtype
    y = conv_transpose(x.astype(dtype), kernel.astype(dtype), stride=self.strides,
                       padding=self.padding, output_padding=self.output_padding,
                       dilation=self.dilation)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y


def conv_bn_relu(x: jax.Array, features: int, name: Optional[str], *, batch_norm: bool,
                 train: bool, bn_axis_name: Optional[str] = None, dtype: Optional[Dtype] = None,
                 kernel_size: Union[int, Sequence[int]] = 3, padding: Padding = "SAME",
                 dilation: Union[int, Sequence[int]] = 1, transpose: bool = False,
                 bn_name: Optional[str] = None,
                 kernel_init: Initializer = nn.initializers.kaiming_normal()
                 ) -> tuple[jax.Array, jax.Array]:
  """Conv (or stride-1 transposed conv) ``name`` [+ BatchNorm] + ReLU.

  Must be called inside a compact method: the layers become children of the caller, so
  parameters sit at ``params[name]`` and ``params[bn_name]`` (default ``name + '_bn'``;
  ``name=None`` lets Flax name them ``Conv_0``/``BatchNorm_0``). Returns
  ``(pre_activation, activation)``. Without BatchNorm the convolution has a bias, with it
  none (BN's shift replaces it).
  """
  if bn_name is None and name is not None:
    bn_name = f"{name}_bn"
  if transpose:
    y = ConvTranspose(features, kernel_size, 1, padding=padding, dilation=dilation,
                      use_bias=not batch_norm, dtype=dtype, name=name)(x)
  else:
    y = Conv(features, kernel_size, padding=padding, dilation=dilation, use_bias=not batch_norm,
             dtype=dtype, kernel_init=kernel_init, name=name)(x)
  if batch_norm:
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=bn_axis_name if train else None, dtype=dtype, name=bn_name)(y)
  return y, nn.relu(y)
