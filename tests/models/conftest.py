"""Fixtures shared by the SegNet and DeconvNet tests (both decoders unpool with VGG pool indices)."""

import functools

import jax
import numpy as np
import pytest


def _numpy_variables(model, x, seed=0, **kwargs):
  """Random variables from numpy (tracing init only: RNG compiles are slow on CPU)."""
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    if name in ("scale", "var"):
      return np.ones(leaf.shape)
    if name == "mean":
      return np.zeros(leaf.shape)
    return 0.1 * rng.standard_normal(leaf.shape)

  return jax.tree_util.tree_map_with_path(lambda p, l: np.float32(fill(p, l)), shapes)


def _check_unpool_routing(inter, stage):
  """Unpool ``stage`` put each value at the argmax of encoder pool ``stage``'s window.

  Independent numpy reference: windows of the sown pre-pool map; ties (e.g. all-zero
  ReLU windows) are only checked for value conservation. Returns #positions checked.
  """
  pre = np.asarray(inter[f"pool{stage}_input"][0])
  indices = np.asarray(inter[f"pool{stage}_indices"][0])
  values = np.asarray(inter[f"unpool{stage}_input"][0])
  out = np.asarray(inter[f"unpool{stage}_output"][0])
  n, height, width, c = pre.shape
  h, w = height // 2, width // 2
  assert out.shape == pre.shape and values.shape == (n, h, w, c)
  assert not np.any(out[:, 2 * h:]) and not np.any(out[:, :, 2 * w:])
  windows = pre[:, :2 * h, :2 * w].reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 2, 4, 5)
  windows = windows.reshape(n, h, w, 4, c)
  placed = out[:, :2 * h, :2 * w].reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 2, 4, 5)
  placed = placed.reshape(n, h, w, 4, c)
  assert np.all(np.count_nonzero(placed, axis=3) <= 1)
  np.testing.assert_allclose(placed.sum(axis=3), values, rtol=1e-6)
  best = windows.argmax(axis=3)
  unique = (windows == windows.max(axis=3, keepdims=True)).sum(axis=3) == 1
  flat = (2 * np.arange(h)[None, :, None, None] + best // 2) * width + (
      2 * np.arange(w)[None, None, :, None] + best % 2)
  np.testing.assert_array_equal(indices[unique], flat[unique])
  chosen = np.take_along_axis(placed, best[:, :, :, None], axis=3)[:, :, :, 0]
  np.testing.assert_allclose(chosen[unique], values[unique], rtol=1e-6)
  return int(np.count_nonzero(unique & (values != 0)))


@pytest.fixture
def numpy_variables():
  return _numpy_variables


@pytest.fixture
def check_unpool_routing():
  return _check_unpool_routing
