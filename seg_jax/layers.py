"""Small shared Flax pieces used by every model.

All convolutions go through :func:`seg_jax.ops.conv2d` so there is one place that
chooses the convolution implementation for the backend.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.ops.conv import Padding, conv2d
from seg_jax.ops.conv_transpose import conv_transpose
from seg_jax.ops.upsample import bilinear_kernel

Dtype = Any
Initializer = Callable[..., jax.Array]


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


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
    kh, kw = _pair(self.kernel_size)
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
  """Conv (no bias) -> BatchNorm -> ReLU, the building block of SegNet/DeconvNet/U-Net.

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
    x = Conv(self.features, self.kernel_size, padding=self.padding,
             use_bias=not self.use_batch_norm, dtype=self.dtype,
             kernel_init=nn.initializers.kaiming_normal())(x)
    if self.use_batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       axis_name=self.bn_axis_name if train else None, dtype=self.dtype)(x)
    return nn.relu(x)


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
    kh, kw = _pair(self.kernel_size)
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
