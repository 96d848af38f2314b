"""The 2-D convolution every seg_jax layer uses (NHWC activations, HWIO kernels).

Why this is not just ``lax.conv_general_dilated``: some of XLA's CPU convolution
*gradients* are far slower than the forward pass. On CPU, :func:`conv2d` can therefore use a
``custom_vjp`` whose kernel gradient is one GEMM over an im2col view of the input
(``dK = cols(x)^T @ dy``), whose input gradient is one GEMM plus col2im
(``dx = col2im(dy @ K^T)``) and whose forward pass can be ``cols(x) @ K``. Which pass uses
a GEMM is chosen per shape (``auto``, the CPU default; see ``_gemm_passes`` for the measured
rule): mainly large kernels on small maps (FCN's 7x7 fc6, whose native input gradient took
~50x longer; DeconvNet's fc6, whose native forward pass took 8.4 s) and RGB first layers; 3x3
convolutions on large maps stay native, where the 9x im2col copy costs more than it saves.
When the optional oneDNN extension is built (:mod:`seg_jax.ops.onednn`), ``auto`` runs every
float32, ungrouped pass on oneDNN except those where a GEMM measured faster (see ``_passes``). ``SEG_JAX_CONV_IMPL=native|gemm|onednn|auto`` overrides the choice;
all give the same numbers up to rounding (tests/ops/test_conv_gradient.py,
tests/ops/test_conv_onednn.py). On GPU/TPU ``auto`` is ``native``.

The transposed convolution is in :mod:`seg_jax.ops.conv_transpose`.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from seg_jax.ops import onednn
from seg_jax.ops.spatial import as_pair

Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_IMPLEMENTATIONS = ("auto", "native", "gemm", "onednn")


def normalize_padding(padding: Padding) -> Union[str, tuple[tuple[int, int], tuple[int, int]]]:
  """Returns 'SAME'/'VALID' or ((top, bottom), (left, right))."""
  if isinstance(padding, str):
    upper = padding.upper()
    if upper not in ("SAME", "VALID"):
      raise ValueError(f"padding string must be 'SAME' or 'VALID', got {padding!r}")
    return upper
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) == 2 and all(isinstance(p, int) for p in padding):
    return ((padding[0], padding[0]), (padding[1], padding[1]))
  if len(padding) == 2 and all(len(p) == 2 for p in padding):
    return tuple((int(a), int(b)) for a, b in padding)
  raise ValueError(f"padding must be 'SAME', 'VALID', an int, (ph, pw) or ((t, b), (l, r)); "
                   f"got {padding!r}")


def conv_implementation() -> str:
  """'native', 'gemm', 'onednn' or 'auto' (per-shape choice, CPU only) for the current
  backend."""
  choice = os.environ.get("SEG_JAX_CONV_IMPL", "auto").lower()
  if choice not in _IMPLEMENTATIONS:
    raise ValueError(f"SEG_JAX_CONV_IMPL must be one of {_IMPLEMENTATIONS}, got {choice!r}")
  if choice in ("auto", "onednn") and jax.default_backend() != "cpu":
    return "native"
  return choice


# Measured on 2 CPU cores (XLA 0.10): the native kernel gradient beats the im2col GEMM
# for 3x3 convolutions on large maps (the 9x im2col copy costs more than it saves), the
# GEMM wins ~3x for an RGB first layer and ~2x for large kernels; XLA's native *input*
# gradient of a large kernel on a small map (FCN's 7x7 fc6) is ~50x slower than a GEMM.
_COL2IM_MAX_BYTES = 256 * 2**20


def _gemm_passes(implementation, x_shape, kernel_shape, out_shape) -> tuple[bool, bool, bool]:
  """(forward, kernel gradient, input gradient) as GEMMs for one convolution."""
  kh, kw, cin, _ = kernel_shape
  large_kernel = kh * kw > 9
  cols_bytes = 4 * out_shape[0] * out_shape[1] * out_shape[2] * kh * kw * cin
  small_cols = cols_bytes <= _COL2IM_MAX_BYTES
  large = large_kernel and small_cols
  # Forward: the GEMM won 3-4x for FCN's fc6 (7x7, 256 -> 2048 on 10-16 px maps) and 116x
  # for DeconvNet's (4x4 map, padding 3), but lost 2-3x on RGB first layers (7x7/2, 5x5).
  gemm_forward = large and cin >= 16
  if implementation == "gemm":
    return gemm_forward, True, large
  if implementation == "auto":
    return gemm_forward, (cin <= 4 or large_kernel) and small_cols, large
  return False, False, False


def _passes(implementation, x, kernel, pads, out_shape) -> tuple[str, str, str]:
  """(forward, kernel gradient, input gradient), each 'native', 'gemm' or 'onednn'.

  With oneDNN built, ``auto`` gives it every pass except where a GEMM measured faster (one
  core, XLA 0.10, oneDNN 3.2): large kernels on small maps (FCN's fc6, 7x7 256->2048 on 11x11:
  GEMM 206/355/216 ms vs oneDNN 458/700/396) and maps under 64 pixels (fc7, 1x1 2048->2048 on
  5x5: 28/28/31 vs 37/53/55); and the input gradient of <= 4 input channels (oneDNN 15 ms vs
  GEMM 3 and XLA 8 for a 3->32 3x3 on 128x128; a first layer's input gradient is rarely
  needed). Elsewhere oneDNN won: 3x3 passes on U-Net's 128..16 maps took 10-50% less time
  (e.g. 32->32 on 128x128, batch 4: 32/31/24 ms vs XLA 36/60/38), an RGB first layer's forward
  2-12x less and its kernel gradient 6x less (FCN's 3->32 on 326x326: 21 ms vs XLA 132).
  These were taken on a shared, loaded core (load 3-6): indicative, not exact.
  """
  use_onednn = (implementation in ("auto", "onednn") and jax.default_backend() == "cpu"
                and onednn.supports(x, kernel, pads, 1))
  if implementation == "onednn":
    if not onednn.available():
      raise RuntimeError(f"conv2d implementation 'onednn': {onednn.info()}")
    if use_onednn:
      return "onednn", "onednn", "onednn"
    implementation = "auto"  # float16/bfloat16 or zero-size: the XLA paths
  gemm = ["gemm" if g else "native" for g in
          _gemm_passes(implementation, x.shape, kernel.shape, out_shape)]
  if not use_onednn:
    return tuple(gemm)
  kh, kw, cin, _ = kernel.shape
  cols_bytes = 4 * out_shape[0] * out_shape[1] * out_shape[2] * kh * kw * cin
  gemm_wins = (kh * kw > 9 and cin >= 16) or out_shape[1] * out_shape[2] < 64
  if gemm_wins and cols_bytes <= _COL2IM_MAX_BYTES:
    return "gemm", "gemm", "gemm"
  return "onednn", "onednn", "onednn" if cin > 4 else gemm[2]


def conv2d(x: jax.Array, kernel: jax.Array, *, stride=1, padding: Padding = 0, dilation=1,
           feature_group_count: int = 1, implementation: str | None = None) -> jax.Array:
  """Cross-correlation ``y[n,i,j,o] = sum x[n, i*s+a*d-p, j*s+b*d-p, c] k[a,b,c,o]``.

  Args:
    x: ``(N, H, W, Cin)``.
    kernel: ``(kh, kw, Cin // groups, Cout)``.
    stride, dilation: int or pair.
    padding: 'SAME', 'VALID', int, pair, or explicit ((t, b), (l, r)).
    implementation: 'native', 'gemm', 'onednn' or 'auto' (see the module docstring); default from
      ``SEG_JAX_CONV_IMPL`` and the backend. All give the same numbers up to float32
      rounding.
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects x (N,H,W,C) and kernel (kh,kw,cin,cout); "
                     f"got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2] * feature_group_count:
    raise ValueError(f"conv2d: input has {x.shape[-1]} channels but kernel expects "
                     f"{kernel.shape[2] * feature_group_count}")
  if kernel.dtype != x.dtype:
    kernel = kernel.astype(x.dtype)
  strides = as_pair(stride, "stride")
  dilation = as_pair(dilation, "dilation")
  pads = normalize_padding(padding)
  if isinstance(pads, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:2], dilation)]
    pads = tuple(lax.padtype_to_pads(x.shape[1:3], dilated, strides, pads))
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  implementation = implementation or conv_implementation()
  if implementation not in _IMPLEMENTATIONS:
    raise ValueError(f"conv2d implementation must be one of {_IMPLEMENTATIONS}, "
                     f"got {implementation!r}")
  if (implementation != "native" and feature_group_count == 1
      and min(min(p) for p in pads) >= 0):
    out_shape = jax.eval_shape(
        lambda a, b: _native_conv(a, b, strides, pads, dilation), x, kernel).shape
    passes = _passes(implementation, x, kernel, pads, out_shape)
    if passes != ("native", "native", "native"):
      return _conv_custom(x, kernel, strides, pads, dilation, passes)
  return _native_conv(x, kernel, strides, pads, dilation, feature_group_count)


def _native_conv(x, kernel, strides, pads, dilation, feature_group_count=1):
  return lax.conv_general_dilated(x, kernel, window_strides=strides, padding=pads,
                                  rhs_dilation=dilation, dimension_numbers=DIMENSION_NUMBERS,
                                  feature_group_count=feature_group_count)


def _im2col(x: jax.Array, kernel_shape, out_hw, strides, pads, dilation) -> jax.Array:
  """``(N*Ho*Wo, kh*kw*Cin)``: for every kernel tap ``(a, b)`` the strided window of the
  padded input that tap sees (tap-major, channels last, matching ``kernel.reshape``)."""
  kh, kw, cin, _ = kernel_shape
  (sh, sw), (dh, dw) = strides, dilation
  n, (ho, wo) = x.shape[0], out_hw
  padded = lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0), (0, 0, 0)))
  taps = []
  for a in range(kh):
    for b in range(kw):
      window = lax.slice(padded, (0, a * dh, b * dw, 0),
                         (n, a * dh + (ho - 1) * sh + 1, b * dw + (wo - 1) * sw + 1, cin),
                         (1, sh, sw, 1))
      taps.append(window.reshape(n * ho * wo, cin))
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=1)


def forward_gemm(x: jax.Array, kernel: jax.Array, strides, pads, dilation) -> jax.Array:
  """:func:`conv2d` as one GEMM ``cols(x) @ K`` (large kernels on small maps, where XLA's
  CPU convolution is slow: a 7x7, 256->2048 convolution on a 4x4 map took 8.4 s natively)."""
  n = x.shape[0]
  out_shape = jax.eval_shape(
      lambda a, b: _native_conv(a, b, strides, pads, dilation), x, kernel).shape
  cols = _im2col(x, kernel.shape, out_shape[1:3], strides, pads, dilation)
  y = lax.dot_general(cols, kernel.reshape(-1, kernel.shape[-1]), (((1,), (0,)), ((), ())),
                      preferred_element_type=jnp.float32)
  return y.astype(x.dtype).reshape(n, *out_shape[1:])


def kernel_gradient_gemm(x: jax.Array, dy: jax.Array, kernel_shape, strides, pads,
                         dilation) -> jax.Array:
  """``dL/dkernel`` of :func:`conv2d` as one GEMM: ``cols(x)^T @ dy``.

  ``cols(x)`` (:func:`_im2col`) has shape ``(N*Ho*Wo, kh*kw*Cin)``. Accumulates in float32.
  """
  kh, kw, cin, cout = kernel_shape
  n, ho, wo, _ = dy.shape
  cols = _im2col(x, kernel_shape, (ho, wo), strides, pads, dilation)
  grad = lax.dot_general(cols, dy.reshape(n * ho * wo, cout), (((0,), (0,)), ((), ())),
                         preferred_element_type=jnp.float32)
  return grad.reshape(kh, kw, cin, cout)


def input_gradient_gemm(dy: jax.Array, kernel: jax.Array, x_shape, strides, pads,
                        dilation) -> jax.Array:
  """``dL/dx`` of :func:`conv2d` as one GEMM ``dy @ K^T`` (the column gradient) followed by
  col2im: each kernel tap's column block is placed, strided, into the padded input and
  summed. Meant for large kernels on small maps, where XLA's native gradient is slow."""
  kh, kw, cin, cout = kernel.shape
  (sh, sw), (dh, dw) = strides, dilation
  n, ho, wo, _ = dy.shape
  hp, wp = x_shape[1] + pads[0][0] + pads[0][1], x_shape[2] + pads[1][0] + pads[1][1]
  dcols = lax.dot_general(dy.reshape(n * ho * wo, cout), kernel.reshape(kh * kw * cin, cout),
                          (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  dcols = dcols.astype(dy.dtype).reshape(n, ho, wo, kh, kw, cin)
  zero = jnp.zeros((), dy.dtype)
  padded = None
  for a in range(kh):
    for b in range(kw):
      top, left = a * dh, b * dw
      placed = lax.pad(dcols[:, :, :, a, b, :], zero,
                       ((0, 0, 0), (top, hp - top - (ho - 1) * sh - 1, sh - 1),
                        (left, wp - left - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
      padded = placed if padded is None else padded + placed
  return lax.slice(padded, (0, pads[0][0], pads[1][0], 0),
                   (n, pads[0][0] + x_shape[1], pads[1][0] + x_shape[2], cin))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_custom(x, kernel, strides, pads, dilation, passes):
  """Convolution whose passes (forward, kernel gradient, input gradient) are each 'native'
  (XLA), 'gemm' or 'onednn'."""
  if passes[0] == "gemm":
    return forward_gemm(x, kernel, strides, pads, dilation)
  if passes[0] == "onednn":
    out_shape = jax.eval_shape(
        lambda a, b: _native_conv(a, b, strides, pads, dilation), x, kernel).shape
    return onednn.forward(x, kernel, out_shape, strides, pads, dilation)
  return _native_conv(x, kernel, strides, pads, dilation)


def _conv_custom_forward(x, kernel, strides, pads, dilation, passes):
  return _conv_custom(x, kernel, strides, pads, dilation, passes), (x, kernel)


def _conv_custom_backward(strides, pads, dilation, passes, residuals, dy):
  x, kernel = residuals
  if passes[2] == "gemm":
    dx = input_gradient_gemm(dy, kernel, x.shape, strides, pads, dilation).astype(x.dtype)
  elif passes[2] == "onednn":
    dx = onednn.input_gradient(dy, kernel, x.shape, strides, pads, dilation)
  else:
    _, input_vjp = jax.vjp(lambda x_: _native_conv(x_, kernel, strides, pads, dilation), x)
    (dx,) = input_vjp(dy)
  if passes[1] == "gemm":
    dk = kernel_gradient_gemm(x, dy, kernel.shape, strides, pads, dilation)
  elif passes[1] == "onednn":
    dk = onednn.kernel_gradient(x, dy, kernel.shape, strides, pads, dilation)
  else:
    _, kernel_vjp = jax.vjp(lambda k_: _native_conv(x, k_, strides, pads, dilation), kernel)
    (dk,) = kernel_vjp(dy)
  return dx, dk.astype(kernel.dtype)


_conv_custom.defvjp(_conv_custom_forward, _conv_custom_backward)
