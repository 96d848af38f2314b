"""Transposed convolution with PyTorch's ``conv_transpose2d`` semantics (NHWC, HWIO kernels).

:func:`conv_transpose` is the one public entry point (``seg_jax.layers.ConvTranspose`` uses
it). It has two implementations with the same numbers:

* ``'dilated'``: one ``lax.conv_general_dilated`` call on the stride-dilated input with the
  spatially flipped kernel (the textbook form; most of its input is inserted zeros);
* ``'subpixel'`` (the CPU default for dilation 1): one ordinary :func:`seg_jax.ops.conv2d`
  with ``s_h*s_w*Cout`` outputs, a depth-to-space shuffle and a crop. No multiplications by
  inserted zeros, and XLA's slow CPU gradients of the lhs-dilated convolution are avoided
  (~2x faster U-Net training).

The matrix view (``y = M.T @ x``) is in :mod:`seg_jax.ops.conv_matrix`.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
from seg_jax.ops.conv import DIMENSION_NUMBERS, conv2d, conv_implementation
from seg_jax.ops.spatial import as_pair

IntOrPair = Union[int, Sequence[int]]
IMPLEMENTATIONS = ("dilated", "subpixel")


def conv_transpose_output_size(size: int, kernel_size: int, stride: int, padding: int,
                               output_padding: int = 0, dilation: int = 1) -> int:
  """PyTorch's transposed-conv output length:
  ``(size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1``.
  """
  return ((size - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
          + output_padding + 1)


def conv_transpose(x: jax.Array, kernel: jax.Array, *, stride: IntOrPair,
                   padding: IntOrPair, output_padding: IntOrPair = 0,
                   dilation: IntOrPair = 1, implementation: str | None = None) -> jax.Array:
  """Transposed convolution, exactly PyTorch's ``conv_transpose2d`` (NHWC in and out).

  Args:
    x: ``(N, H, W, Cin)``.
    kernel: ``(kh, kw, Cin, Cout)``; PyTorch's weight ``w_t`` ``(Cin, Cout, kh, kw)`` maps
      to it by ``kernel[i, j, a, b] = w_t[a, b, i, j]`` (``w_t.permute(2, 3, 0, 1)``).
    stride, padding, output_padding, dilation: int or one per spatial axis.
    implementation: 'dilated' or 'subpixel' (see the module docstring); default 'dilated'
      when ``SEG_JAX_CONV_IMPL=native`` (or on GPU/TPU), else 'subpixel'. 'subpixel' with
      ``dilation > 1`` runs 'dilated'.

  Definition: input pixel ``(h, w)`` adds ``x[h, w, c] * kernel[a, b, c, :]`` to output
  ``(h*s + a*d - p, w*s + b*d - p)``; equivalently ``y = M.T @ x`` for the matrix ``M`` of
  the strided convolution ``Cout -> Cin`` with kernel ``kernel.transpose(0, 1, 3, 2)``,
  and the input-gradient (VJP) of that convolution. Output size per axis is
  :func:`conv_transpose_output_size`. ``output_padding`` only adds rows/columns at the
  bottom/right, resolving the size ambiguity of strided convolutions.

  This is *not* ``flax.linen.ConvTranspose`` (which neither flips the kernel nor uses
  PyTorch's padding).
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv_transpose expects x (N,H,W,C) and kernel (kh,kw,cin,cout); "
                     f"got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv_transpose: input has {x.shape[-1]} channels but kernel expects "
                     f"{kernel.shape[2]}")
  stride, padding = as_pair(stride, "stride"), as_pair(padding, "padding")
  output_padding = as_pair(output_padding, "output_padding")
  dilation = as_pair(dilation, "dilation")
  pads = []
  for axis in range(2):
    s, p, op, d, k = (stride[axis], padding[axis], output_padding[axis], dilation[axis],
                      kernel.shape[axis])
    if s < 1 or d < 1 or p < 0 or op < 0:
      raise ValueError(f"conv_transpose needs stride, dilation >= 1 and padding, "
                       f"output_padding >= 0; got {stride}, {dilation}, {padding}, "
                       f"{output_padding}")
    if op >= max(s, d):
      raise ValueError(f"conv_transpose: output_padding {output_padding} must be smaller than "
                       f"either stride {stride} or dilation {dilation}")
    if conv_transpose_output_size(x.shape[1 + axis], k, s, p, op, d) <= 0:
      raise ValueError(f"conv_transpose: padding {padding} leaves no output for input "
                       f"{x.shape[1:3]} and kernel {kernel.shape[:2]}")
    # Correlating the stride-dilated input with the flipped kernel: the full overlap needs
    # d*(k-1) zeros on each side; PyTorch's padding crops p of them, output_padding adds.
    pads.append((d * (k - 1) - p, d * (k - 1) - p + op))
  if implementation is None:
    implementation = "dilated" if conv_implementation() == "native" else "subpixel"
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"conv_transpose implementation must be 'dilated' or 'subpixel', "
                     f"got {implementation!r}")
  if implementation == "subpixel" and dilation == (1, 1):
    return _subpixel(x, kernel.astype(x.dtype), stride, padding, output_padding)
  flipped = kernel[::-1, ::-1].astype(x.dtype)
  return jax.lax.conv_general_dilated(
      x, flipped, window_strides=(1, 1), padding=pads, lhs_dilation=stride,
      rhs_dilation=dilation, dimension_numbers=DIMENSION_NUMBERS)


def _subpixel(x: jax.Array, kernel: jax.Array, stride: tuple[int, int],
              padding: tuple[int, int], output_padding: tuple[int, int]) -> jax.Array:
  """The transposed convolution (dilation 1, validated arguments) as a *sub-pixel*
  convolution: one :func:`conv2d` with ``s_h*s_w*Cout`` outputs, a depth-to-space shuffle
  and a crop.

  Output phase ``r`` of ``y[s*q + r]`` only sees the kernel taps ``s*t + r``, so
  ``y[s*q + r] = sum_t x[q - t] kernel[s*t + r]``, a small dense convolution per phase. For
  ``kernel == stride`` (U-Net's 2x2/2) it is a single GEMM.
  """
  (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  th, tw = -(-kh // sh), -(-kw // sw)  # taps per phase, ceil(k / s)
  padded = jnp.pad(kernel, ((0, sh * th - kh), (0, sw * tw - kw), (0, 0), (0, 0)))
  # kernel[s*t + r] -> (t, r); correlation needs the taps in reverse order of t.
  phases = padded.reshape(th, sh, tw, sw, cin, cout)[::-1, :, ::-1]
  phases = phases.transpose(0, 2, 4, 1, 3, 5).reshape(th, tw, cin, sh * sw * cout)
  out_h = (h - 1) * sh - 2 * ph + kh + oph
  out_w = (w - 1) * sw - 2 * pw + kw + opw
  # Only the phase rows q0..q1 that the cropped output needs are computed (the "full"
  # transposed convolution has h + th - 1 of them): for a stride-1 7x7 transposed conv
  # with padding 3 on a 4x4 map (DeconvNet's deconv_fc6) computing all of them is 6x the
  # work. Rows past the full extent come out as zeros from the convolution's padding.
  (lo_h, hi_h, start_h), (lo_w, hi_w, start_w) = (
      _needed_phase_rows(size, taps, s, p, out)
      for size, taps, s, p, out in ((h, th, sh, ph, out_h), (w, tw, sw, pw, out_w)))
  z = conv2d(x, phases.astype(x.dtype), padding=((lo_h, hi_h), (lo_w, hi_w)))
  qh, qw = z.shape[1:3]
  full = z.reshape(n, qh, qw, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
  full = full.reshape(n, qh * sh, qw * sw, cout)
  return full[:, start_h:start_h + out_h, start_w:start_w + out_w, :]


def _needed_phase_rows(size: int, taps: int, stride: int, pad: int,
                       out: int) -> tuple[int, int, int]:
  """(low pad, high pad, crop start) of the sub-pixel convolution along one axis.

  Output row ``i`` of the transposed convolution is row ``pad + i`` of the full one, i.e.
  phase row ``q = (pad + i) // stride``; rows ``q0..q1`` are needed.
  """
  q0 = min(pad // stride, taps - 1)
  q1 = (pad + out - 1) // stride
  low = taps - 1 - q0
  high = max(q1 - size + 1, 0)
  return low, high, pad - stride * q0
