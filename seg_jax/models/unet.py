"""U-Net (Ronneberger, Fischer and Brox, 2015): a contracting path, an expanding path and
skip connections that concatenate encoder features into the decoder.

Two geometries:

* ``padding='valid'`` is the paper's network. Every 3x3 convolution is unpadded, so each
  output pixel sees a complete context and the output is SMALLER than the input
  (572 -> 388 at depth 4); skip features are centre-cropped before concatenation. This is
  the one model in seg_jax whose output is not at the input resolution. Valid input sizes
  are ``2**depth * k - 4`` (k large enough); ``unet_valid_output_size`` /
  ``unet_valid_input_size`` convert between the two and ``unet_valid_margin`` gives the
  context ``(input - output) / 2`` eaten on each side (92 px at depth 4), which is the
  ``margin`` to use with :func:`seg_jax.inference.predict_tiled`.
* ``padding='same'`` zero-pads the convolutions; the output has the input size. Inputs must
  have height and width divisible by ``2**depth`` (a ValueError says so otherwise; pad the
  image, e.g. with ``predict_tiled``, rather than letting the network guess).

``use_batch_norm=False`` with ``upsampling='transposed'`` is the paper's architecture;
batch norm (default) makes training from scratch much easier. ``upsampling='bilinear'``
(resize x2, then a 1x1 conv halving the channels) clamps at the map border, so in the
valid variant the outermost pixels of each upsampled map are extrapolated: only
'transposed' keeps the valid U-Net exactly translation-equivariant (which exact
overlap-tile inference relies on).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.layers import Conv, ConvBNReLU, ConvTranspose, scale_channels
from seg_jax.ops.spatial import center_crop
from seg_jax.ops.upsample import resize_bilinear

Dtype = Any

_PADDINGS = ("same", "valid")
_UPSAMPLINGS = ("transposed", "bilinear")


def _try_valid_output_size(input_size: int, depth: int) -> Optional[int]:
  """Output size of the valid U-Net, or None when some layer gets an odd/empty map."""
  size = input_size
  for _ in range(depth):
    size -= 4                      # two unpadded 3x3 convolutions
    if size <= 0 or size % 2:      # 2x2 max pooling needs an even size
      return None
    size //= 2
  size -= 4                        # bottleneck convolutions
  if size <= 0:
    return None
  for _ in range(depth):
    size = 2 * size - 4            # 2x2 up-convolution, then two unpadded convolutions
    if size <= 0:
      return None
  return size


def _check_depth(depth: int) -> None:
  if not isinstance(depth, int) or depth < 1:
    raise ValueError(f"U-Net depth must be a positive int, got {depth!r}")


def unet_valid_output_size(input_size: int, depth: int = 4) -> int:
  """Output side length of the valid (unpadded) U-Net for an input side ``input_size``.

  ``output = input - (12 * 2**depth - 8)``; e.g. 572 -> 388 at depth 4. Raises a
  ValueError naming the next valid input size when ``input_size`` is not valid.
  """
  _check_depth(depth)
  out = _try_valid_output_size(int(input_size), depth)
  if out is None:
    candidate = max(int(input_size), 1)
    while _try_valid_output_size(candidate, depth) is None:
      candidate += 1
    raise ValueError(f"input size {input_size} is not valid for a valid U-Net of depth {depth} "
                     f"(every pooled map must be even); next valid input size is {candidate}")
  return out


def unet_valid_input_size(output_size: int, depth: int = 4) -> int:
  """Input side length whose valid-U-Net output is exactly ``output_size`` (388 -> 572).

  Achievable outputs are ``2**depth * k + 4``; others raise a ValueError naming the next one.
  """
  _check_depth(depth)
  size = int(output_size)
  ok = size > 0
  for _ in range(depth):
    ok = ok and (size + 4) % 2 == 0
    size = (size + 4) // 2
  size += 4
  for _ in range(depth):
    size = 2 * size + 4
  if not ok or _try_valid_output_size(size, depth) != output_size:
    candidate = max(int(output_size), 1)
    while (candidate - 4) % 2**depth or candidate < 4:
      candidate += 1
    raise ValueError(f"output size {output_size} is not reachable by a valid U-Net of depth "
                     f"{depth}; next reachable output size is {candidate}")
  return size


def unet_valid_margin(depth: int = 4) -> int:
  """Context (pixels per side) the valid U-Net consumes: ``(input - output) / 2``."""
  _check_depth(depth)
  return 6 * 2**depth - 4


class UNet(nn.Module):
  """U-Net: images (N, H, W, 3) -> logits (N, H', W', num_classes).

  ``H' = H`` for ``padding='same'`` (H, W divisible by ``2**depth``) and
  ``H' = unet_valid_output_size(H, depth)`` for ``padding='valid'``.
  Level ``l`` has ``base_features * 2**l * width`` channels (rounded, at least 1).
  """
  num_classes: int
  width: float = 1.0
  depth: int = 4
  base_features: int = 64
  padding: str = "same"
  upsampling: str = "transposed"
  use_batch_norm: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  def _features(self, level: int) -> int:
    return scale_channels(self.base_features * 2**level, self.width)

  def _check_input(self, x: jax.Array) -> None:
    if self.padding not in _PADDINGS:
      raise ValueError(f"UNet padding must be one of {_PADDINGS}, got {self.padding!r}")
    if self.upsampling not in _UPSAMPLINGS:
      raise ValueError(f"UNet upsampling must be one of {_UPSAMPLINGS}, got {self.upsampling!r}")
    _check_depth(self.depth)
    if x.ndim != 4:
      raise ValueError(f"UNet expects images (N, H, W, C), got shape {x.shape}")
    for size in x.shape[1:3]:
      if self.padding == "same" and size % 2**self.depth:
        raise ValueError(f"same-padded UNet of depth {self.depth} needs H and W divisible by "
                         f"{2**self.depth}, got {x.shape[1:3]}")
      if self.padding == "valid":
        unet_valid_output_size(size, self.depth)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check_input(x)
    conv_padding = "SAME" if self.padding == "same" else "VALID"

    def double_conv(h, features, name):
      for i in range(2):
        h = ConvBNReLU(features, 3, padding=conv_padding, use_batch_norm=self.use_batch_norm,
                       bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                       name=f"{name}_conv{i}")(h, train)
      return h

    skips = []
    for level in range(self.depth):
      x = double_conv(x, self._features(level), f"down{level}")
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = double_conv(x, self._features(self.depth), "bottleneck")

    for level in reversed(range(self.depth)):
      features = self._features(level)
      if self.upsampling == "transposed":
        x = ConvTranspose(features, kernel_size=2, strides=2, dtype=self.dtype,
                          name=f"up{level}_upconv")(x)
      else:
        n, h, w, c = x.shape
        x = resize_bilinear(x, (2 * h, 2 * w))
        x = Conv(features, 1, dtype=self.dtype, name=f"up{level}_reduce")(x)
      skip = center_crop(skips[level], x.shape[1:3])
      x = jnp.concatenate([skip, x.astype(skip.dtype)], axis=-1)
      x = double_conv(x, features, f"up{level}")

    return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
