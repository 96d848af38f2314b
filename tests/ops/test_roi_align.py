"""RoIAlign against an independent per-sample numpy loop (torchvision's sampling rules)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import assign_fpn_levels, roi_align
from seg_jax.ops.roi_align import roi_align_batched


def _bilinear(fmap, y, x):
  height, width = fmap.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(fmap.shape[-1])
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(math.floor(y)), int(math.floor(x))
  if y0 >= height - 1:
    y0 = y1 = height - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= width - 1:
    x0 = x1 = width - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1]
          + ly * (1 - lx) * fmap[y1, x0] + ly * lx * fmap[y1, x1])


def _reference(features, boxes, indices, oh, ow, scale, ratio, aligned):
  out = np.zeros((len(boxes), oh, ow, features.shape[-1]))
  for k, (box, b) in enumerate(zip(boxes, indices)):
    off = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = [v * scale - off for v in box]
    rw, rh = x1 - x0, y1 - y0
    if not aligned:
      rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / oh, rw / ow
    gh = ratio if ratio > 0 else int(math.ceil(rh / oh))
    gw = ratio if ratio > 0 else int(math.ceil(rw / ow))
    for i in range(oh):
      for j in range(ow):
        acc = np.zeros(features.shape[-1])
        for iy in range(gh):
          for ix in range(gw):
            y = y0 + i * bh + (iy + 0.5) * bh / gh
            x = x0 + j * bw + (ix + 0.5) * bw / gw
            acc += _bilinear(features[b], y, x)
        out[k, i, j] = acc / max(gh * gw, 1)
  return out


def _boxes(rng, n, size):
  # Boxes partly outside the image, tiny boxes and a degenerate one.
  xy = rng.uniform(-0.3 * size, size, size=(n, 2))
  wh = rng.uniform(0.0, 0.8 * size, size=(n, 2))
  boxes = np.concatenate([xy, xy + wh], 1)
  boxes[0] = [3.0, 3.0, 3.0, 3.0]
  boxes[1] = [-20.0, -20.0, -5.0, -8.0]
  return boxes.astype(np.float32)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale,ratio", [(1.0, 2), (0.5, 1), (0.25, 3), (0.125, 2), (0.5, 0)])
def test_roi_align_matches_loop_reference(aligned, scale, ratio):
  rng = np.random.default_rng(int(scale * 100) + ratio + 7 * aligned)
  features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  image = 11 / scale
  boxes = _boxes(rng, 9, image)
  indices = rng.integers(0, 2, size=9).astype(np.int32)
  if ratio == 0:  # adaptive mode is exact while ceil(roi / bin) <= max_adaptive_samples
    boxes = np.clip(boxes, -2, 10 / scale)
  pool = jax.jit(functools.partial(roi_align, output_size=(3, 4), spatial_scale=scale,
                                   sampling_ratio=ratio, aligned=aligned,
                                   max_adaptive_samples=8))  # one compile, not many eager ops
  got = pool(features, boxes, indices)
  want = _reference(features, boxes, indices, 3, 4, scale, ratio, aligned)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_roi_align_jit_and_gradient():
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
  boxes = jnp.array([[1.0, 1.0, 6.0, 5.0]])
  f = jax.jit(lambda x: roi_align(x, boxes, jnp.zeros(1, jnp.int32), 2).sum())
  grad = jax.grad(f)(features)
  # Each output bin averages weights that sum to 1, so the gradient sums to 4 bins x 2 ch.
  np.testing.assert_allclose(float(grad.sum()), 8.0, rtol=1e-5)


def test_assign_fpn_levels():
  sides = np.array([1.0, 111.0, 112.0, 223.9, 224.0, 447.0, 448.0, 2000.0], np.float32)
  boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], 1)
  want = np.clip(np.floor(4 + np.log2(sides / 224.0) + 1e-6), 2, 5)
  got = jax.jit(assign_fpn_levels)(boxes)
  np.testing.assert_array_equal(np.asarray(got), want)
  np.testing.assert_array_equal(want, [2, 2, 3, 3, 4, 4, 5, 5])


def test_roi_align_rejects_bad_shapes():
  with pytest.raises(ValueError, match="features"):
    roi_align(jnp.zeros((4, 4, 1)), jnp.zeros((1, 4)), jnp.zeros(1, jnp.int32), 2)
  with pytest.raises(ValueError, match="box_indices"):
    roi_align(jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 4)), jnp.zeros(1, jnp.int32), 2)


@pytest.mark.parametrize("aligned,ratio", [(True, 2), (False, 0)])
def test_roi_align_batched_equals_gather_form(aligned, ratio):
  rng = np.random.default_rng(3)
  features = rng.normal(size=(2, 8, 10, 3)).astype(np.float32)
  boxes = np.stack([_boxes(rng, 5, 20.0), _boxes(rng, 5, 20.0)])
  kwargs = dict(spatial_scale=0.5, sampling_ratio=ratio, aligned=aligned)
  batched = jax.jit(functools.partial(roi_align_batched, output_size=3, **kwargs))(
      features, boxes)
  flat = jax.jit(functools.partial(roi_align, output_size=3, **kwargs))(
      features, boxes.reshape(-1, 4), np.repeat(np.arange(2, dtype=np.int32), 5))
  np.testing.assert_allclose(np.asarray(batched).reshape(flat.shape), np.asarray(flat),
                             rtol=1e-5, atol=1e-5)
