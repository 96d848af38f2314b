"""Anchors against an explicit per-cell loop with torchvision's conventions."""

import numpy as np
import pytest

from seg_jax.ops import generate_anchors
from seg_jax.ops.anchors import base_anchors


def test_base_anchors_values():
  # size 32, ratio 0.5: h = 32 * sqrt(.5) = 22.6, w = 45.25 -> round(+-w/2, +-h/2).
  got = base_anchors([32], [0.5, 1.0, 2.0])
  want = np.array([[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]], np.float32)
  np.testing.assert_array_equal(got, want)


def test_base_anchor_order_is_ratio_major():
  got = base_anchors([16, 32], [1.0, 4.0])
  want = np.array([[-8, -8, 8, 8], [-16, -16, 16, 16], [-4, -16, 4, 16], [-8, -32, 8, 32]])
  np.testing.assert_array_equal(got, want)


def test_generate_anchors_matches_loop():
  image = (64, 96)
  feature_sizes = [(16, 24), (8, 12), (3, 5)]
  sizes = [(8,), (16, 24), (40,)]
  ratios = [(0.5, 1.0, 2.0), (1.0,), (0.5, 2.0)]
  got = generate_anchors(image, feature_sizes, sizes, ratios)
  want = []
  for (fh, fw), level_sizes, level_ratios in zip(feature_sizes, sizes, ratios):
    sy, sx = image[0] // fh, image[1] // fw
    for y in range(fh):
      for x in range(fw):
        for r in level_ratios:
          for s in level_sizes:
            h, w = s * np.sqrt(r), s / np.sqrt(r)
            base = np.round(np.array([-w, -h, w, h], np.float32) / 2)
            want.append(base + [x * sx, y * sy, x * sx, y * sy])
  np.testing.assert_array_equal(got, np.array(want, np.float32))


def test_generate_anchors_rejects_mismatched_levels():
  with pytest.raises(ValueError, match="feature levels"):
    generate_anchors((32, 32), [(8, 8)], [(8,), (16,)], [(1.0,)])
