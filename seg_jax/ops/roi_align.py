"""RoIAlign (He et al. 2017) with torchvision's exact sampling rules, and FPN level mapping.

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
  if features.ndim != 4:
    raise ValueError(f"roi_align: features must be (N,H,W,C), got {features.shape}")
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"roi_align: boxes must be (K,4), got {boxes.shape}")
  if box_indices.shape != boxes.shape[:1]:
    raise ValueError(f"roi_align: box_indices must be ({boxes.shape[0]},), "
                     f"got {box_indices.shape}")
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
