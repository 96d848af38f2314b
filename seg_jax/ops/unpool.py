"""Unpooling: the fixed upsampling ops of the lecture (NHWC, vectorised, jittable).

* :func:`unpool_nearest` copies each value into its ``f x f`` block.
* :func:`unpool_bed_of_nails` puts each value at the top-left of its block, zeros elsewhere.
* :func:`max_pool_with_argmax` + :func:`max_unpool` remember *where* each maximum came
  from and put the value back there (SegNet / DeconvNet), like PyTorch's ``max_pool2d``
  with ``return_indices=True`` and ``max_unpool2d``.
"""

from __future__ import annotations

import functools
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.ops.spatial import as_pair

IntOrPair = Union[int, Sequence[int]]


def _check_nhwc(x: jax.Array, fn: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{fn} expects x (N, H, W, C), got shape {x.shape}")


def unpool_nearest(x: jax.Array, factor: IntOrPair = 2) -> jax.Array:
  """Nearest-neighbour unpooling: ``[[1, 2], [3, 4]]`` -> each value fills a 2x2 block."""
  _check_nhwc(x, "unpool_nearest")
  fh, fw = as_pair(factor, "factor")
  if min(fh, fw) < 1:
    raise ValueError(f"unpool_nearest factor must be >= 1, got {factor}")
  return jnp.repeat(jnp.repeat(x, fh, axis=1), fw, axis=2)


def unpool_bed_of_nails(x: jax.Array, factor: IntOrPair = 2) -> jax.Array:
  """Bed-of-nails unpooling: each value at the top-left of its block, zeros elsewhere.

  ``[[1, 2], [3, 4]]`` -> ``[[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]``.
  """
  _check_nhwc(x, "unpool_bed_of_nails")
  fh, fw = as_pair(factor, "factor")
  if min(fh, fw) < 1:
    raise ValueError(f"unpool_bed_of_nails factor must be >= 1, got {factor}")
  n, h, w, c = x.shape
  # (N, H, 1, W, 1, C) padded to (N, H, fh, W, fw, C): the value sits at block offset (0, 0).
  blocks = jnp.pad(x[:, :, None, :, None, :],
                   ((0, 0), (0, 0), (0, fh - 1), (0, 0), (0, fw - 1), (0, 0)))
  return blocks.reshape(n, h * fh, w * fw, c)


def max_pool_with_argmax(x: jax.Array, window: IntOrPair = 2, stride: IntOrPair = 2,
                         padding: IntOrPair = 0) -> tuple[jax.Array, jax.Array]:
  """Max pooling that also returns where each maximum came from.

  Returns ``(pooled, indices)``, both ``(N, Ho, Wo, C)`` with
  ``Ho = (H + 2 * padding - window) // stride + 1``. ``indices`` (int32) holds the flat
  position ``h * W + w`` of the maximum inside its own ``(n, c)`` input plane, ready for
  :func:`max_unpool`. Conventions follow PyTorch ``max_pool2d(return_indices=True)``:
  ties go to the first maximum in row-major window order, padding is ``-inf`` and never
  wins (``padding <= window // 2`` so each window sees real pixels), and a NaN counts as
  the maximum (the last NaN of the window, as PyTorch's ``val > max or isnan(val)``).

  The gradient of ``pooled`` flows only to the chosen position (summed where windows
  overlap), as in PyTorch; ``jax.lax.reduce_window`` max would split it across ties.
  """
  _check_nhwc(x, "max_pool_with_argmax")
  (kh, kw), (sh, sw) = as_pair(window, "window"), as_pair(stride, "stride")
  ph, pw = as_pair(padding, "padding")
  if min(kh, kw, sh, sw) < 1:
    raise ValueError(f"max_pool_with_argmax needs window, stride >= 1; got {window}, {stride}")
  if not (0 <= ph <= kh // 2 and 0 <= pw <= kw // 2):
    raise ValueError(f"max_pool_with_argmax padding {padding} must be in [0, window // 2] "
                     f"for window {window}")
  h, w = x.shape[1:3]
  if h + 2 * ph < kh or w + 2 * pw < kw:
    raise ValueError(f"max_pool_with_argmax: input {x.shape[1:3]} is smaller than window {window}")
  return _max_pool_with_argmax(x, kh, kw, sh, sw, ph, pw)


# The ops below are many small jnp calls; jitting the core (static sizes) keeps eager use fast.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _max_pool_with_argmax(x, kh, kw, sh, sw, ph, pw):
  h, w = x.shape[1:3]
  ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
  if jnp.issubdtype(x.dtype, jnp.floating):
    fill = -jnp.inf
  else:
    fill = jnp.iinfo(x.dtype).min
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=fill)

  # One strided slice per window tap (a small static loop over taps, not pixels).
  rows = np.arange(ho) * sh - ph
  cols = np.arange(wo) * sw - pw
  taps = []
  for a in range(kh):
    for b in range(kw):
      patch = xp[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :]
      r, q = rows + a, cols + b
      inside = ((r >= 0) & (r < h))[:, None] & ((q >= 0) & (q < w))[None, :]
      flat = (r[:, None] * w + q[None, :]).astype(np.int32)
      taps.append((patch, inside[None, :, :, None], flat[None, :, :, None]))
  best = functools.reduce(jnp.maximum, [patch for patch, _, _ in taps])  # NaN propagates
  # Walk the taps backwards so the first maximum (row-major) is selected last and wins;
  # PyTorch's ``val > max or isnan(val)`` makes the *last* NaN win, so only it is a NaN
  # candidate. Elementwise selects only: XLA fuses them into one pass, and the gradient
  # of ``pooled`` flows to exactly the selected tap.
  pooled = jnp.zeros(best.shape, x.dtype)
  indices = jnp.zeros(best.shape, jnp.int32)
  nan_later = jnp.zeros(best.shape, bool)
  for patch, inside, flat in reversed(taps):
    is_nan = jnp.isnan(patch)
    is_max = (patch == best) | (is_nan & ~nan_later)
    nan_later = nan_later | is_nan
    if not inside.all():
      is_max = is_max & inside
    pooled = jnp.where(is_max, patch, pooled)
    indices = jnp.where(is_max, flat, indices)
  return pooled, indices


def max_unpool(x: jax.Array, indices: jax.Array, output_size: Sequence[int]) -> jax.Array:
  """Inverse of :func:`max_pool_with_argmax`: scatter values back, zeros elsewhere.

  ``x`` and ``indices`` are ``(N, h, w, C)``; the result is ``(N, H, W, C)`` with
  ``output_size = (H, W)`` (pass the pre-pooling size so odd sizes round-trip). Value
  ``x[n, i, j, c]`` goes to flat position ``indices[n, i, j, c] = row * W + col`` of plane
  ``(n, c)``, like PyTorch ``max_unpool2d``.

  Duplicate indices (overlapping pooling windows that chose the same pixel) are resolved
  deterministically: the *last* source in row-major ``(i, j)`` order wins (what PyTorch's
  sequential CPU kernel does), and only it receives gradient. Indices outside
  ``[0, H * W)`` are dropped.
  """
  _check_nhwc(x, "max_unpool")
  if indices.shape != x.shape:
    raise ValueError(f"max_unpool: indices shape {indices.shape} != x shape {x.shape}")
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"max_unpool: indices must be integers, got {indices.dtype}")
  out_h, out_w = as_pair(output_size, "output_size")
  if min(out_h, out_w) < 1:
    raise ValueError(f"max_unpool output_size must be positive, got {output_size}")
  return _max_unpool(x, indices, out_h, out_w)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _max_unpool(x, indices, out_h, out_w):
  n, h, w, c = x.shape
  plane = out_h * out_w
  total = n * plane * c
  # One flat NHWC scatter: value (n, i, j, c) goes to n*plane*C + index*C + c.
  local = indices.astype(jnp.int32)
  in_range = (local >= 0) & (local < plane)
  base = (jnp.arange(n, dtype=jnp.int32)[:, None, None, None] * (plane * c)
          + jnp.arange(c, dtype=jnp.int32))
  target = jnp.where(in_range, base + local * c, total).ravel()
  # Flat NHWC source ids grow with (i, j) inside each (n, c) plane: the largest id among
  # sources sharing a target is the last one in row-major order, and the only one kept.
  source = jnp.arange(n * h * w * c, dtype=jnp.int32)
  winner = jnp.full((total,), -1, jnp.int32).at[target].max(source, mode="drop")
  keep = in_range.ravel() & (winner[jnp.minimum(target, total - 1)] == source)
  values = jnp.where(keep, x.ravel(), jnp.zeros((), x.dtype))
  out = jnp.zeros((total,), x.dtype).at[target].add(values, mode="drop")
  return out.reshape(n, out_h, out_w, c)
