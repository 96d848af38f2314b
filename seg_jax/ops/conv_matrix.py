"""Convolution as a matrix, and the transposed convolution as its transpose (the lecture's view).

A (cross-correlation) convolution is linear, so ``conv(x).ravel() == M @ x.ravel()`` for a
sparse, banded matrix ``M`` (:func:`conv_matrix`). The *transposed convolution* used for
learned upsampling is multiplication by ``M.T``: every input pixel scatters a
kernel-weighted copy into the (larger) output. The op itself is
:func:`seg_jax.ops.conv_transpose.conv_transpose`; tests/ops/test_conv_matrix.py checks that
it equals ``M.T``.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.ops.spatial import as_pair

IntOrPair = Union[int, Sequence[int]]


def _padding_pairs(padding, ndim: int) -> tuple[tuple[int, int], ...]:
  """int, per-axis ints, or per-axis (low, high) pairs -> per-axis (low, high)."""
  if isinstance(padding, str):
    raise ValueError(f"conv_matrix needs explicit integer padding, got {padding!r}")
  if isinstance(padding, (int, np.integer)):
    return ((int(padding), int(padding)),) * ndim
  padding = tuple(padding)
  if ndim == 1 and len(padding) == 2 and all(isinstance(p, (int, np.integer)) for p in padding):
    return ((int(padding[0]), int(padding[1])),)  # 1-D: (low, high)
  if len(padding) == ndim and all(isinstance(p, (int, np.integer)) for p in padding):
    return tuple((int(p), int(p)) for p in padding)
  if len(padding) == ndim and all(len(p) == 2 for p in padding):
    return tuple((int(a), int(b)) for a, b in padding)
  raise ValueError(f"padding must be an int, {ndim} ints or {ndim} (low, high) pairs; "
                   f"got {padding!r}")


def _tap_matrix(size: int, k: int, stride: int, pad: tuple[int, int],
                dilation: int) -> np.ndarray:
  """``T[i, h] = a`` if kernel tap ``a`` of output ``i`` reads input ``h``, else -1.

  Output ``i`` reads input ``i*stride + a*dilation - pad_low`` (outside = zero padding).
  With dilation >= 1 at most one tap links a given (i, h), so ``T`` is well defined.
  """
  out = (size + pad[0] + pad[1] - dilation * (k - 1) - 1) // stride + 1
  if out <= 0:
    raise ValueError(f"conv_matrix: input size {size} is too small for kernel {k}, "
                     f"dilation {dilation}, padding {pad}")
  taps = np.full((out, size), -1, dtype=np.int64)
  rows = np.arange(out)
  for a in range(k):  # loop over kernel taps only; all output positions at once
    cols = rows * stride + a * dilation - pad[0]
    inside = (cols >= 0) & (cols < size)
    taps[rows[inside], cols[inside]] = a
  return taps


def conv_matrix(kernel, input_shape: Sequence[int], *, stride: IntOrPair = 1,
                padding=0, dilation: IntOrPair = 1):
  """Dense matrix ``M`` with ``conv(x).ravel() == M @ x.ravel()``.

  ``conv`` is cross-correlation with zero padding (like ``lax``/PyTorch and
  :func:`seg_jax.ops.conv2d`).

  * 1-D: ``kernel`` ``(k,)``, ``input_shape`` ``(L,)`` -> ``M`` of shape ``(L_out, L)``.
    E.g. kernel ``(x, y, z)``, stride 1, padding 1, ``L = 4`` gives
    ``[[y, z, 0, 0], [x, y, z, 0], [0, x, y, z], [0, 0, x, y]]``.
  * 2-D: ``kernel`` ``(kh, kw, cin, cout)`` (HWIO), ``input_shape`` ``(H, W, cin)`` ->
    ``M`` of shape ``(Ho*Wo*cout, H*W*cin)``; rows ravel ``(Ho, Wo, cout)``, columns
    ravel ``(H, W, cin)`` (one image, NHWC without the batch axis).

  ``stride``/``dilation`` are an int or one per spatial axis; ``padding`` an int, one
  int per axis, or one (low, high) pair per axis (in 1-D a pair is (low, high)).

  Returns a ``jax.Array`` if ``kernel`` is one (differentiable and jittable: the sparsity
  pattern is built on the host from static shapes), otherwise a ``numpy`` array of the
  kernel's dtype -- an ``object`` array of strings works, for printing symbolic matrices.
  The matrix is dense, so keep the shapes small: it is a teaching and testing tool.
  """
  is_jax = isinstance(kernel, jax.Array)
  xp = jnp if is_jax else np
  if not is_jax:
    kernel = np.asarray(kernel)
  input_shape = tuple(int(s) for s in input_shape)
  if kernel.ndim == 1:
    if len(input_shape) != 1:
      raise ValueError(f"1-D conv_matrix needs input_shape (L,), got {input_shape}")
    stride, dilation = as_pair(stride, "stride")[:1], as_pair(dilation, "dilation")[:1]
    kernel = kernel.reshape(1, kernel.shape[0], 1, 1)
    input_shape = (1, input_shape[0], 1)
    pads = ((0, 0),) + _padding_pairs(padding, 1)
    stride, dilation = (1,) + stride, (1,) + dilation
  elif kernel.ndim == 4:
    if len(input_shape) != 3 or input_shape[2] != kernel.shape[2]:
      raise ValueError(f"2-D conv_matrix needs input_shape (H, W, {kernel.shape[2]}), "
                       f"got {input_shape}")
    stride, dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = _padding_pairs(padding, 2)
  else:
    raise ValueError(f"conv_matrix kernel must be (k,) or (kh, kw, cin, cout); got {kernel.shape}")
  if min(stride) < 1 or min(dilation) < 1:
    raise ValueError(f"stride and dilation must be >= 1, got {stride} and {dilation}")

  kh, kw, cin, cout = kernel.shape
  h, w, _ = input_shape
  th = _tap_matrix(h, kh, stride[0], pads[0], dilation[0])  # (Ho, H)
  tw = _tap_matrix(w, kw, stride[1], pads[1], dilation[1])  # (Wo, W)
  ho, wo = th.shape[0], tw.shape[0]
  # Index grid over (Ho, Wo, cout, H, W, cin): entry = kernel[a, b, c, o] or 0.
  a = th[:, None, None, :, None, None]
  b = tw[None, :, None, None, :, None]
  o = np.arange(cout)[None, None, :, None, None, None]
  c = np.arange(cin)[None, None, None, None, None, :]
  valid = (a >= 0) & (b >= 0)
  entries = kernel[np.maximum(a, 0), np.maximum(b, 0), c, o]
  zero = np.zeros((), kernel.dtype) if kernel.dtype != object else 0
  matrix = xp.where(valid, entries, zero)
  return matrix.reshape(ho * wo * cout, h * w * cin)

