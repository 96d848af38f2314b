"""The stride-s oracle (FCN ceiling) against an independent numpy bilinear resize."""

import re
import subprocess
import sys

import numpy as np
import pytest

from seg_jax.benchmarks import stride_ceiling


def _numpy_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
  """Half-pixel-centre bilinear upsampling of (N, g, g, C) to (N, size, size, C), edges
  clamped (the convention of jax.image.resize and PyTorch's align_corners=False)."""
  g = grid.shape[1]
  coords = (np.arange(size) + 0.5) * g / size - 0.5
  coords = np.clip(coords, 0, g - 1)
  lo = np.floor(coords).astype(int)
  hi = np.minimum(lo + 1, g - 1)
  frac = coords - lo
  rows = grid[:, lo] * (1 - frac)[None, :, None, None] + grid[:, hi] * frac[None, :, None, None]
  return rows[:, :, lo] * (1 - frac)[None, None, :, None] + rows[:, :, hi] * frac[None, None, :, None]


def _numpy_mean_iou(labels, predictions, num_classes):
  ious = []
  for c in range(num_classes):
    inter = np.sum((labels == c) & (predictions == c))
    union = np.sum((labels == c) | (predictions == c))
    if np.sum(labels == c):
      ious.append(inter / union)
  return float(np.mean(ious))


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_oracle_matches_numpy_reference(stride):
  rng = np.random.default_rng(stride)
  labels = np.zeros((3, 32, 32), np.int64)
  for n in range(3):  # a few blobs with random extents, so boundaries fall anywhere
    for c in range(1, 4):
      y, x = rng.integers(0, 24, 2)
      h, w = rng.integers(3, 12, 2)
      labels[n, y:y + h, x:x + w] = c
  onehot = np.eye(4, dtype=np.float64)[labels]
  grid = onehot.reshape(3, 32 // stride, stride, 32 // stride, stride, 4).mean(axis=(2, 4))
  upsampled = _numpy_bilinear(grid, 32)
  got = stride_ceiling.pooled_predictions(labels, 4, stride)
  # Ties (equal class fractions) may break either way in float32; compare elsewhere.
  top2 = np.sort(upsampled, axis=-1)[..., -2:]
  decided = top2[..., 1] - top2[..., 0] > 1e-5
  assert decided.mean() > 0.9
  np.testing.assert_array_equal(got[decided], upsampled.argmax(-1)[decided])
  scores = stride_ceiling.ceiling(labels, 4, stride)
  assert scores["mean_iou"] == pytest.approx(_numpy_mean_iou(labels, got, 4), abs=1e-9)
  assert scores["mean_iou"] < 1.0


def test_stride_one_is_perfect_and_coarser_is_worse():
  from seg_jax.data import shapes
  labels = np.stack([shapes.render_example(i, image_size=64, split="validation")["segmentation"]
                     for i in range(8)])
  values = [stride_ceiling.ceiling(labels, 5, s)["mean_iou"] for s in (1, 4, 8, 16)]
  assert values[0] == 1.0
  assert values[0] > values[1] > values[2] > values[3]


@pytest.mark.parametrize("labels, stride, message", [
    (np.zeros((4, 4), np.int64), 2, "must be (N, H, W)"),
    (np.zeros((1, 8, 8), np.int64), 3, "divide the label size 8x8, got 3"),
    (np.full((1, 8, 8), 7), 2, "labels must lie in [0, 5), got [7, 7]"),
])
def test_bad_input(labels, stride, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    stride_ceiling.pooled_predictions(labels, 5, stride)


def test_cli_unknown_builder_config_is_one_line():
  result = subprocess.run([sys.executable, "-m", "experiments.stride_ceiling",
                           "--builder_configs=nope"], capture_output=True, text=True)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: unknown shapes builder config 'nope'; known: 64, 128, cls128, single128, single64, tiny")


def test_fitted_oracle_recovers_a_map_a_coarse_grid_can_express():
  """Labels that *are* the arg-max of upsampled stride-8 logits: the fitted oracle finds
  them (IU ~1), the pooled one does not; on a shape dataset the fitted one is at least
  as good as the pooled one."""
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  coarse = 3.0 * rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  labels = np.asarray(jnp.argmax(jax.image.resize(coarse, (2, 32, 32, 3), "bilinear"), -1))
  fitted = stride_ceiling.ceiling(labels, 3, 8, "fitted")["mean_iou"]
  pooled = stride_ceiling.ceiling(labels, 3, 8, "pooled")["mean_iou"]
  assert fitted > 0.98
  assert pooled < fitted - 0.02


def test_unknown_oracle():
  with pytest.raises(ValueError, match=re.escape("oracle must be one of ['fitted', 'pooled'], got 'best'")):
    stride_ceiling.ceiling(np.zeros((1, 8, 8), np.int64), 2, 2, "best")
