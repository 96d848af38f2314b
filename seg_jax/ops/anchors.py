"""Anchor boxes with torchvision ``AnchorGenerator`` conventions.

Per level, base anchors are ``round([-w, -h, w, h] / 2)`` with ``h = size * sqrt(r)``,
``w = size / sqrt(r)`` for every aspect ratio ``r`` (outer loop) and size (inner loop),
centred at 0; they are shifted by ``(x * stride_w, y * stride_h)`` for every feature-map
cell (row-major), so anchors are ordered ``(y, x, anchor)``, which matches an NHWC head
output reshaped to ``(H * W * A,)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """``(len(ratios) * len(sizes), 4)`` zero-centred rounded anchors (float32)."""
  sizes = np.asarray(sizes, np.float32)
  ratios = np.asarray(aspect_ratios, np.float32)
  if sizes.ndim != 1 or ratios.ndim != 1 or sizes.size == 0 or ratios.size == 0:
    raise ValueError(f"base_anchors: need non-empty 1-D sizes and aspect_ratios, got "
                     f"{sizes!r} and {ratios!r}")
  h_ratios = np.sqrt(ratios)
  w_ratios = 1.0 / h_ratios
  ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2).astype(np.float32)


def generate_anchors(image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]],
                     sizes: Sequence[Sequence[float]],
                     aspect_ratios: Sequence[Sequence[float]]) -> np.ndarray:
  """All anchors for an image, levels concatenated: ``(sum_l H_l * W_l * A_l, 4)``.

  Computed with numpy (shapes are static), so the result is a constant under jit.

  Args:
    image_size: ``(H, W)`` of the (padded) input image.
    feature_sizes: ``(H_l, W_l)`` per level; stride is ``image_size // feature_size``.
    sizes: anchor sizes per level, e.g. ``((32,), (64,), (128,), (256,), (512,))``.
    aspect_ratios: ratios (h / w) per level, e.g. ``((0.5, 1.0, 2.0),) * 5``.
  """
  if not (len(feature_sizes) == len(sizes) == len(aspect_ratios)):
    raise ValueError(f"generate_anchors: {len(feature_sizes)} feature levels but "
                     f"{len(sizes)} size tuples and {len(aspect_ratios)} ratio tuples")
  image_h, image_w = image_size
  levels = []
  for (fh, fw), level_sizes, level_ratios in zip(feature_sizes, sizes, aspect_ratios):
    stride_h, stride_w = image_h // fh, image_w // fw
    shift_x = np.arange(fw, dtype=np.float32) * stride_w
    shift_y = np.arange(fh, dtype=np.float32) * stride_h
    yy, xx = np.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = np.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)
    base = base_anchors(level_sizes, level_ratios)[None]
    levels.append((shifts + base).reshape(-1, 4))
  return np.concatenate(levels, axis=0)
