"""Bilinear upsampling: the FCN transposed-convolution initialiser and a resize helper.

A transposed convolution with stride ``f`` and the kernel of :func:`bilinear_kernel`
performs bilinear interpolation (FCN initialises, and keeps fixed, its last upsampling
layer this way). :func:`resize_bilinear` is the plain resize with PyTorch's
``F.interpolate(mode='bilinear')`` semantics, for heads that upsample logits to the input.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def bilinear_kernel(size: int, channels: int, dtype=jnp.float32) -> jax.Array:
  """FCN's bilinear upsampling kernel, ``(size, size, channels, channels)`` HWIO.

  Each channel is upsampled separately (the kernel is diagonal over channels) with the
  separable tent ``(1 - |i - center| / factor) * (1 - |j - center| / factor)`` where
  ``factor = (size + 1) // 2`` and ``center = factor - 1`` (odd ``size``) or
  ``factor - 0.5`` (even). With :func:`seg_jax.ops.conv_transpose`, stride ``f``, kernel
  ``2f - f % 2`` and padding ``ceil((f - 1) / 2)`` upsample by exactly ``f`` with
  half-pixel-centred bilinear interpolation away from the border.
  """
  if size < 1 or channels < 1:
    raise ValueError(f"bilinear_kernel needs size >= 1 and channels >= 1, got {size}, {channels}")
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  tent = 1.0 - np.abs(np.arange(size) - center) / factor
  kernel = np.zeros((size, size, channels, channels), np.float64)
  kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(tent, tent)[:, :, None]
  return jnp.asarray(kernel, dtype)


def _interp_indices(in_size: int, out_size: int, align_corners: bool):
  """Per output position: the two source indices and the weight of the second."""
  out = np.arange(out_size, dtype=np.float64)
  if align_corners:
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = out * scale
  else:
    # Half-pixel centres: output pixel o covers [o, o+1) * in/out in input coordinates.
    src = np.maximum((out + 0.5) * (in_size / out_size) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(x: jax.Array, size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
  """Bilinear resize of ``x`` ``(N, H, W, C)`` to ``(N, size[0], size[1], C)``.

  Semantics are PyTorch's ``F.interpolate(x, size, mode='bilinear', align_corners=...)``:

  * ``align_corners=False``: half-pixel centres, output ``o`` samples input coordinate
    ``(o + 0.5) * in / out - 0.5`` clamped to the image (edge values repeat). For
    upsampling this equals ``jax.image.resize(x, shape, 'bilinear')``; for downsampling
    it does *not* antialias (``jax.image.resize`` does).
  * ``align_corners=True``: the corner pixels of input and output coincide, output ``o``
    samples ``o * (in - 1) / (out - 1)``.

  Separable and exact: two gathers and a lerp per axis, differentiable in ``x``.
  """
  if x.ndim != 4:
    raise ValueError(f"resize_bilinear expects x (N, H, W, C), got shape {x.shape}")
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"resize_bilinear size must be two positive ints (H, W), got {size}")
  return _resize_bilinear(x, size, align_corners)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _resize_bilinear(x, size, align_corners):
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  for axis, out_size in zip((1, 2), size):
    if out_size == x.shape[axis]:
      continue  # identity under both conventions
    lo, hi, frac = _interp_indices(x.shape[axis], out_size, align_corners)
    shape = [1, 1, 1, 1]
    shape[axis] = out_size
    frac = jnp.asarray(frac.reshape(shape), x.dtype)
    x_lo = jnp.take(x, lo, axis=axis)
    x_hi = jnp.take(x, hi, axis=axis)
    x = x_lo + (x_hi - x_lo) * frac
  return x
