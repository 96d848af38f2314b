"""The 2-D convolution every seg_jax layer uses (NHWC activations, HWIO kernels).

Why this is not just ``lax.conv_general_dilated``: XLA's CPU backend computes the *kernel*
gradient of a convolution (a "convolution" whose kernel is the whole output gradient) several
times slower than the forward pass, which made CPU training steps ~5x slower than PyTorch's.
On CPU, :func:`conv2d` therefore uses a ``custom_vjp`` whose kernel gradient is one large GEMM
over an im2col view of the input (``dK = cols(x)^T @ dy``), the shape of work the CPU matmul
runs near its peak. The forward pass and the input gradient stay XLA's native convolutions,
and on GPU/TPU nothing changes. ``SEG_JAX_CONV_IMPL=native|gemm|auto`` (default ``auto``:
``gemm`` on CPU) overrides the choice; both give the same numbers (see tests/ops/test_conv.py).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_IMPLEMENTATIONS = ("auto", "native", "gemm")


def _pair(value, name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
  return value


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
  raise ValueError(f"padding must be 'SAME', 'VALID', an int, (ph, pw) or ((t, b), (l, r)); got {padding!r}")


def conv_implementation() -> str:
  """The implementation :func:`conv2d` uses for the current default backend."""
  choice = os.environ.get("SEG_JAX_CONV_IMPL", "auto").lower()
  if choice not in _IMPLEMENTATIONS:
    raise ValueError(f"SEG_JAX_CONV_IMPL must be one of {_IMPLEMENTATIONS}, got {choice!r}")
  if choice == "auto":
    return "gemm" if jax.default_backend() == "cpu" else "native"
  return choice


def conv2d(x: jax.Array, kernel: jax.Array, *, stride=1, padding: Padding = 0, dilation=1,
           feature_group_count: int = 1, implementation: str | None = None) -> jax.Array:
  """Cross-correlation ``y[n,i,j,o] = sum x[n, i*s+a*d-p, j*s+b*d-p, c] k[a,b,c,o]``.

  Args:
    x: ``(N, H, W, Cin)``.
    kernel: ``(kh, kw, Cin // groups, Cout)``.
    stride, dilation: int or pair.
    padding: 'SAME', 'VALID', int, pair, or explicit ((t, b), (l, r)).
    implementation: 'native' or 'gemm' (see the module docstring); default from the backend.
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects x (N,H,W,C) and kernel (kh,kw,cin,cout); got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2] * feature_group_count:
    raise ValueError(f"conv2d: input has {x.shape[-1]} channels but kernel expects "
                     f"{kernel.shape[2] * feature_group_count}")
  if kernel.dtype != x.dtype:
    kernel = kernel.astype(x.dtype)
  strides = _pair(stride, "stride")
  dilation = _pair(dilation, "dilation")
  pads = normalize_padding(padding)
  if isinstance(pads, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:2], dilation)]
    pads = tuple(lax.padtype_to_pads(x.shape[1:3], dilated, strides, pads))
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  implementation = implementation or conv_implementation()
  if implementation == "gemm" and feature_group_count == 1:
    return _conv_gemm_backward(x, kernel, strides, pads, dilation)
  return _native_conv(x, kernel, strides, pads, dilation, feature_group_count)


def _native_conv(x, kernel, strides, pads, dilation, feature_group_count=1):
  return lax.conv_general_dilated(x, kernel, window_strides=strides, padding=pads,
                                  rhs_dilation=dilation, dimension_numbers=DIMENSION_NUMBERS,
                                  feature_group_count=feature_group_count)


def kernel_gradient_gemm(x: jax.Array, dy: jax.Array, kernel_shape, strides, pads,
                         dilation) -> jax.Array:
  """``dL/dkernel`` of :func:`conv2d` as one GEMM: ``cols(x)^T @ dy``.

  ``cols(x)`` stacks, for every kernel tap ``(a, b)``, the strided window of the padded input
  that tap sees: shape ``(N*Ho*Wo, kh*kw*Cin)``. Accumulates in float32.
  """
  kh, kw, cin, cout = kernel_shape
  (sh, sw), (dh, dw) = strides, dilation
  n, ho, wo, _ = dy.shape
  padded = lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (pads[0][0], pads[0][1], 0), (pads[1][0], pads[1][1], 0), (0, 0, 0)))
  taps = []
  for a in range(kh):
    for b in range(kw):
      window = lax.slice(padded, (0, a * dh, b * dw, 0),
                         (n, a * dh + (ho - 1) * sh + 1, b * dw + (wo - 1) * sw + 1, cin),
                         (1, sh, sw, 1))
      taps.append(window.reshape(n * ho * wo, cin))
  cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=1)
  grad = lax.dot_general(cols, dy.reshape(n * ho * wo, cout), (((0,), (0,)), ((), ())),
                         preferred_element_type=jnp.float32)
  return grad.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_gemm_backward(x, kernel, strides, pads, dilation):
  return _native_conv(x, kernel, strides, pads, dilation)


def _conv_gemm_forward(x, kernel, strides, pads, dilation):
  return _native_conv(x, kernel, strides, pads, dilation), (x, kernel)


def _conv_gemm_backward_pass(strides, pads, dilation, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: _native_conv(x_, kernel, strides, pads, dilation), x)
  (dx,) = input_vjp(dy)
  dk = kernel_gradient_gemm(x, dy, kernel.shape, strides, pads, dilation)
  return dx, dk.astype(kernel.dtype)


_conv_gemm_backward.defvjp(_conv_gemm_forward, _conv_gemm_backward_pass)
