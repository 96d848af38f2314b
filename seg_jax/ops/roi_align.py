"""RoIAlign (He et al. 2017) and RoIPool (Girshick 2015) with torchvision's exact rules,
and FPN level mapping.

Sampling rules (torchvision ``roi_align``): box coordinates are scaled by
``spatial_scale`` and, when ``aligned``, shifted by -0.5 (pixel centres); the legacy
mode (``aligned=False``) instead clamps RoI width/height to at least 1. Each of the
``oh x ow`` bins averages a ``g_h x g_w`` grid of bilinear samples. A sample with
``y < -1`` or ``y > H`` (same for x) contributes 0; ``y <= 0`` is clamped to 0; when
``floor(y) >= H - 1`` the sample snaps to row ``H - 1``.

Implementation: bilinear weights factor into a y-part and an x-part and the average over
the sample grid is the product of per-axis averages, so each RoI gets a ``(oh, 2g)``
row-weight table and a ``(ow, 2g)`` column-weight table; one gather of the
``(oh*2g) x (ow*2g)`` support pixels and an einsum produce the output. Everything has
static shapes, so it jits. Gradients flow to ``features`` only (boxes are treated as
constants, as in torchvision).
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp

from seg_jax.ops.boxes import box_area


def _axis_weights(start, bin_size, grid, size: int, out: int, max_grid: int):
  """Per-axis sample indices and weights.

  Args:
    start, bin_size: ``(K,)`` RoI start and bin size along the axis (feature coords).
    grid: ``(K,)`` int number of samples per bin along the axis (<= ``max_grid``).
    size: feature-map extent along the axis.
    out: number of output bins.
    max_grid: static upper bound of ``grid``.

  Returns:
    indices ``(K, out, max_grid * 2)`` int32 and weights ``(K, out, max_grid * 2)`` whose
    sum over the last axis already includes the ``1 / grid`` averaging.
  """
  bins = jnp.arange(out, dtype=start.dtype)
  samples = jnp.arange(max_grid, dtype=start.dtype)
  grid_f = jnp.maximum(grid, 1).astype(start.dtype)
  coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
           + (samples[None, None, :] + 0.5) * bin_size[:, None, None] / grid_f[:, None, None])
  used = samples[None, None, :] < grid[:, None, None]
  inside = (coord >= -1.0) & (coord <= size)  # False for NaN as well
  coord = jnp.maximum(coord, 0.0)
  low = jnp.floor(coord).astype(jnp.int32)
  at_edge = low >= size - 1
  low = jnp.where(at_edge, size - 1, low)
  high = jnp.where(at_edge, size - 1, low + 1)
  coord = jnp.where(at_edge, low.astype(coord.dtype), coord)
  frac = coord - low
  scale = jnp.where(used & inside, 1.0, 0.0) / grid_f[:, None, None]
  indices = jnp.concatenate([low, high], axis=-1)
  weights = jnp.concatenate([(1.0 - frac) * scale, frac * scale], axis=-1)
  return jnp.clip(indices, 0, size - 1), weights


def _tables(boxes, height: int, width: int, oh: int, ow: int, spatial_scale: float,
            sampling_ratio: int, aligned: bool, max_adaptive_samples: int):
  """Row and column (indices, weights) tables of every box (see module docstring)."""
  boxes = jax.lax.stop_gradient(boxes).astype(jnp.float32)
  offset = 0.5 if aligned else 0.0
  scaled = boxes * spatial_scale - offset
  x0, y0, x1, y1 = scaled[..., 0], scaled[..., 1], scaled[..., 2], scaled[..., 3]
  roi_w, roi_h = x1 - x0, y1 - y0
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  bin_h, bin_w = roi_h / oh, roi_w / ow
  if sampling_ratio > 0:
    max_grid = int(sampling_ratio)
    grid_h = jnp.full(x0.shape, max_grid, jnp.int32)
    grid_w = grid_h
  else:
    max_grid = int(max_adaptive_samples)
    grid_h = jnp.clip(jnp.ceil(roi_h / oh), 0, max_grid).astype(jnp.int32)
    grid_w = jnp.clip(jnp.ceil(roi_w / ow), 0, max_grid).astype(jnp.int32)
  flat = lambda v: v.reshape(-1)
  rows, row_w = _axis_weights(flat(y0), flat(bin_h), flat(grid_h), height, oh, max_grid)
  cols, col_w = _axis_weights(flat(x0), flat(bin_w), flat(grid_w), width, ow, max_grid)
  return rows, row_w, cols, col_w


def _output_size(output_size) -> tuple[int, int]:
  return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def _check_roi_inputs(op: str, features, boxes, box_indices) -> None:
  """One-line errors for the shared ``(features, boxes, box_indices)`` contract."""
  if features.ndim != 4:
    raise ValueError(f"{op}: features must be (N,H,W,C), got {features.shape}")
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"{op}: boxes must be (K,4), got {boxes.shape}")
  if box_indices.shape != boxes.shape[:1]:
    raise ValueError(f"{op}: box_indices must be ({boxes.shape[0]},), got {box_indices.shape}")


def roi_align(features: jax.Array, boxes: jax.Array, box_indices: jax.Array,
              output_size: Union[int, Sequence[int]], *, spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = True,
              max_adaptive_samples: int = 4) -> jax.Array:
  """Bilinear RoI pooling ``(N,H,W,C), (K,4), (K,) -> (K, oh, ow, C)``.

  Args:
    features: NHWC feature map.
    boxes: ``(K, 4)`` xyxy boxes in input-image coordinates.
    box_indices: ``(K,)`` batch index of each box.
    output_size: ``oh`` or ``(oh, ow)``.
    spatial_scale: multiplies box coordinates (e.g. 1/16 for stride 16).
    sampling_ratio: samples per bin and axis; ``<= 0`` is torchvision's adaptive
      ``ceil(roi_size / output_size)``, which needs dynamic shapes: here it is exact as
      long as that count is ``<= max_adaptive_samples`` and capped at it otherwise.
    aligned: pixel-centre alignment (-0.5 shift); ``False`` = legacy Mask R-CNN.
    max_adaptive_samples: static bound for the adaptive mode.
  """
  _check_roi_inputs("roi_align", features, boxes, box_indices)
  oh, ow = _output_size(output_size)
  _, height, width, _ = features.shape
  dtype = features.dtype if jnp.issubdtype(features.dtype, jnp.floating) else jnp.float32
  rows, row_w, cols, col_w = _tables(boxes, height, width, oh, ow, spatial_scale,
                                     sampling_ratio, aligned, max_adaptive_samples)
  batch = box_indices.astype(jnp.int32)[:, None, None, None, None]
  # Gather the support: (K, oh, 2g, ow, 2g, C).
  support = features[batch, rows[:, :, :, None, None], cols[:, None, None, :, :]]
  out = jnp.einsum("kasbtc,kas,kbt->kabc", support.astype(jnp.float32),
                   row_w, col_w, precision=jax.lax.Precision.HIGHEST)
  return out.astype(dtype)


def _dense(indices, weights, size: int):
  """``(K, out, S)`` index/weight tables -> dense ``(K, out, size)`` interpolation matrix."""
  one_hot = indices[..., None] == jnp.arange(size)
  return jnp.sum(jnp.where(one_hot, weights[..., None], 0.0), axis=-2)


def roi_align_batched(features: jax.Array, boxes: jax.Array,
                      output_size: Union[int, Sequence[int]], *, spatial_scale: float = 1.0,
                      sampling_ratio: int = 2, aligned: bool = True,
                      max_adaptive_samples: int = 4) -> jax.Array:
  """:func:`roi_align` for per-image boxes ``(N,H,W,C), (N,R,4) -> (N,R,oh,ow,C)``.

  Same numbers, different algorithm: the per-axis tables become dense ``(oh, H)`` and
  ``(ow, W)`` interpolation matrices and pooling is two batched matmuls, with no gather
  and, crucially on CPU, no scatter-add in the backward pass. Costs ``O(R*oh*H*W*C)``, so
  it suits the small feature maps of this library (use :func:`roi_align` for big ones).
  """
  if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4 or \
      boxes.shape[0] != features.shape[0]:
    raise ValueError(f"roi_align_batched: need features (N,H,W,C) and boxes (N,R,4), got "
                     f"{features.shape} and {boxes.shape}")
  oh, ow = _output_size(output_size)
  n, num_boxes = boxes.shape[:2]
  _, height, width, _ = features.shape
  rows, row_w, cols, col_w = _tables(boxes, height, width, oh, ow, spatial_scale,
                                     sampling_ratio, aligned, max_adaptive_samples)
  ay = _dense(rows, row_w, height).reshape(n, num_boxes, oh, height).astype(features.dtype)
  ax = _dense(cols, col_w, width).reshape(n, num_boxes, ow, width).astype(features.dtype)
  out = jnp.einsum("nrah,nhwc->nrawc", ay, features)
  return jnp.einsum("nrawc,nrbw->nrabc", out, ax)


def _round_half_away(x: jax.Array) -> jax.Array:
  """C's ``round``: halves go away from zero (``jnp.round`` rounds them to even)."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _float32_quotient(numerator: jax.Array, denominator: int) -> jax.Array:
  """Correctly rounded float32 ``numerator / denominator`` for ints ``1 <= numerator < 2**24``.

  torchvision computes RoIPool bin sizes as a float32 division, and bin edges depend on its
  last bit; XLA's vectorised CPU division can be one ulp off, so the quotient is formed in
  integers: a 24-bit mantissa ``m = round_half_even(numerator * 2**k / denominator)``.
  """
  bits = lambda x: 32 - jax.lax.clz(x)
  numerator = numerator.astype(jnp.int32)
  d = jnp.int32(denominator)
  shift = 23 + bits(d) - bits(numerator)  # numerator << shift has 23 + bits(d) bits
  shift = jnp.where((numerator << shift) < (d << 23), shift + 1, shift)  # m >= 2**23
  scaled = numerator << shift  # < 2**(24 + bits(d)) <= 2**31 for denominator < 128
  mantissa, remainder = scaled // d, scaled % d
  round_up = (2 * remainder > d) | ((2 * remainder == d) & (mantissa % 2 == 1))
  mantissa = mantissa + round_up.astype(jnp.int32)
  return jnp.ldexp(mantissa.astype(jnp.float32), -shift)


def _pool_bins(start, end, size: int, out: int):
  """torchvision ``roi_pool`` bins along one axis: ``[lo, hi)`` int32 ``(K, out)`` each.

  Corners are rounded to pixels, the RoI spans ``end - start + 1`` pixels (at least 1),
  bin ``p`` covers ``floor(p * bin) .. ceil((p + 1) * bin)`` from the RoI start (float32
  products, as in torchvision), clipped to ``[0, size]``.
  """
  start, end = _round_half_away(start), _round_half_away(end)
  length = jnp.clip(end - start + 1.0, 1.0, 2.0 ** 24 - 1).astype(jnp.int32)
  bin_size = _float32_quotient(length, out)
  bins = jnp.arange(out, dtype=jnp.float32)
  lo = jnp.floor(bins * bin_size[:, None]) + start[:, None]
  hi = jnp.ceil((bins + 1.0) * bin_size[:, None]) + start[:, None]
  return (jnp.clip(lo, 0, size).astype(jnp.int32), jnp.clip(hi, 0, size).astype(jnp.int32))


def _running_argmax(values_at, lo, hi, bound: int, shape):
  """First argmax over windows ``[lo, hi)``, scanning the offsets ``0..bound-1``.

  ``lo``/``hi`` broadcast to ``shape``; ``values_at(index)`` returns the values at
  positions ``index`` (shaped like ``lo``) with shape ``shape``. A strict ``>`` keeps the
  first maximum, as torchvision's loop does. Returns ``(max, argmax)``; argmax -1 if empty.
  """
  def visit(offset, carry):
    best, arg = carry
    index = lo + offset
    values = values_at(jnp.minimum(index, bound - 1))
    better = (index < hi) & (values > best)
    return jnp.where(better, values, best), jnp.where(better, index, arg)

  init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.full(shape, -1, jnp.int32))
  return jax.lax.fori_loop(0, bound, visit, init)


def roi_pool(features: jax.Array, boxes: jax.Array, box_indices: jax.Array,
             output_size: Union[int, Sequence[int]], *,
             spatial_scale: float = 1.0) -> jax.Array:
  """Max RoI pooling ``(N,H,W,C), (K,4), (K,) -> (K, oh, ow, C)`` (torchvision ``roi_pool``).

  Box corners ``* spatial_scale`` are rounded half away from zero to feature pixels (the
  quantisation RoIAlign removes); see :func:`_pool_bins` for the bins. Each bin is the
  maximum over its pixels, 0 for an empty bin. The gradient reaches only the first maximal
  element of each bin in row-major order, like torchvision's argmax routing.

  Implementation: the argmax is found without gradients in two separable passes (columns,
  then rows), each a loop over the window offset with gathers of ``(K, H, ow, C)`` /
  ``(K, oh, ow, C)`` values; the output is one gather at the argmax, which carries the
  gradient.
  """
  _check_roi_inputs("roi_pool", features, boxes, box_indices)
  oh, ow = _output_size(output_size)
  if not (0 < oh < 128 and 0 < ow < 128):
    raise ValueError(f"roi_pool: output_size must be in 1..127, got {output_size}")
  _, height, width, channels = features.shape
  num_boxes = boxes.shape[0]
  scaled = jax.lax.stop_gradient(boxes).astype(jnp.float32) * jnp.float32(spatial_scale)
  row_lo, row_hi = _pool_bins(scaled[:, 1], scaled[:, 3], height, oh)
  col_lo, col_hi = _pool_bins(scaled[:, 0], scaled[:, 2], width, ow)
  batch = box_indices.astype(jnp.int32)
  values = jax.lax.stop_gradient(features).astype(jnp.float32)
  # Pass 1: per feature row, the max over each column bin -> (K, H, ow, C).
  rows = jnp.arange(height)[None, :, None, None]
  row_max, col_arg = _running_argmax(
      lambda cols: values[batch[:, None, None, None], rows, cols,
                          jnp.arange(channels)],
      col_lo[:, None, :, None], col_hi[:, None, :, None], width,
      (num_boxes, height, ow, channels))
  # Pass 2: the max of those over each row bin -> (K, oh, ow, C).
  take = lambda table, index: jnp.take_along_axis(table, index, axis=1)
  _, row_arg = _running_argmax(
      lambda r: take(row_max, jnp.broadcast_to(r, (num_boxes, oh, ow, channels))),
      row_lo[:, :, None, None], row_hi[:, :, None, None], height,
      (num_boxes, oh, ow, channels))
  empty = row_arg < 0
  row_arg = jnp.maximum(row_arg, 0)
  col_arg = jnp.maximum(jnp.take_along_axis(col_arg, row_arg, axis=1), 0)
  out = features[batch[:, None, None, None], row_arg, col_arg,
                 jnp.arange(channels)[None, None, None, :]]
  return jnp.where(empty, jnp.zeros((), features.dtype), out)


def assign_fpn_levels(boxes: jax.Array, k_min: int = 2, k_max: int = 5,
                      canonical_scale: float = 224.0, canonical_level: int = 4,
                      eps: float = 1e-6) -> jax.Array:
  """FPN level ``floor(k0 + log2(sqrt(area) / 224) + eps)`` clamped to ``[k_min, k_max]``.

  Returns the level number itself (e.g. 2..5), int32 (FPN paper eq. 1, torchvision
  ``LevelMapper``; subtract ``k_min`` for a list index).
  """
  scale = jnp.sqrt(jnp.maximum(box_area(boxes.astype(jnp.float32)), 0.0))
  levels = jnp.floor(canonical_level + jnp.log2(scale / canonical_scale) + eps)
  return jnp.clip(levels, k_min, k_max).astype(jnp.int32)
