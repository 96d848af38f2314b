"""The 2-D convolution every seg_jax layer uses (NHWC activations, HWIO kernels).

Routing all convolutions through :func:`conv2d` keeps one place where the
backend-specific implementation is chosen (see the performance notes in BUILD.md).
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp

Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


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


def conv2d(x: jax.Array, kernel: jax.Array, *, stride=1, padding: Padding = 0, dilation=1,
           feature_group_count: int = 1) -> jax.Array:
  """Cross-correlation ``y[n,i,j,o] = sum x[n, i*s+a*d-p, j*s+b*d-p, c] k[a,b,c,o]``.

  Args:
    x: ``(N, H, W, Cin)``.
    kernel: ``(kh, kw, Cin // groups, Cout)``.
    stride, dilation: int or pair.
    padding: 'SAME', 'VALID', int, pair, or explicit ((t, b), (l, r)).
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects x (N,H,W,C) and kernel (kh,kw,cin,cout); got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2] * feature_group_count:
    raise ValueError(f"conv2d: input has {x.shape[-1]} channels but kernel expects "
                     f"{kernel.shape[2] * feature_group_count}")
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype) if kernel.dtype != x.dtype else kernel,
      window_strides=_pair(stride, "stride"),
      padding=normalize_padding(padding),
      rhs_dilation=_pair(dilation, "dilation"),
      dimension_numbers=DIMENSION_NUMBERS,
      feature_group_count=feature_group_count)
