"""DeconvNet: shapes, unpooling with mirrored encoder indices, training with BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import get_model
from seg_jax.models.deconvnet import DeconvNet

WIDTH = 1 / 16


pytestmark = pytest.mark.usefixtures("fast_compile")


def numpy_variables(model, x, seed=0, **kwargs):
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


def check_unpool_routing(inter, stage):
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


@pytest.mark.parametrize("size", [(32, 32), (36, 52), (64, 48), (45, 33)])
def test_output_has_input_size(size):
  model = get_model("deconvnet", num_classes=4, width=WIDTH)
  x = jnp.zeros((2, *size, 3))
  out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert out.shape == (2, *size, 4)
  params = variables["params"]
  assert params["fc6"]["kernel"].shape == (7, 7, 32, 256)
  assert params["fc7"]["kernel"].shape == (1, 1, 256, 256)
  assert params["deconv_fc6"]["kernel"].shape == (7, 7, 256, 32)
  assert params["deconv1_1"]["kernel"].shape == (3, 3, 4, 4)
  assert params["score"]["kernel"].shape == (1, 1, 4, 4)
  assert "mean" in variables["batch_stats"]["deconv2_1_bn"]


def test_valid_fc_padding_is_the_paper_geometry():
  model = DeconvNet(num_classes=2, width=WIDTH, fc_padding="VALID")
  x = jnp.zeros((1, 224, 240, 3))
  out, state = jax.eval_shape(
      functools.partial(model.init_with_output, mutable=["params", "batch_stats", "intermediates"]),
      jax.random.key(0), x)
  assert out.shape == (1, 224, 240, 2)
  assert state["intermediates"]["unpool5_input"][0].shape == (1, 7, 7, 32)
  with pytest.raises(ValueError, match="fc_padding='SAME'"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_each_unpooling_uses_its_mirrored_encoder_indices():
  model = DeconvNet(num_classes=3, width=WIDTH)
  x = jax.random.normal(jax.random.key(1), (2, 36, 52, 3))
  variables = numpy_variables(model, x)
  apply = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))
  out, state = apply(variables, x)
  assert out.shape == (2, 36, 52, 3)
  inter = state["intermediates"]
  checked = [check_unpool_routing(inter, stage) for stage in range(1, 6)]
  assert all(count > 0 for count in checked), checked


def test_training_updates_batch_stats_and_reduces_loss():
  model = DeconvNet(num_classes=2, width=WIDTH)
  rng = np.random.default_rng(0)
  x = rng.normal(0, 0.1, (2, 32, 32, 3)).astype(np.float32)
  labels = np.zeros((2, 32, 32), np.int32)
  labels[0, 4:18, 6:20] = labels[1, 12:28, 2:16] = 1
  x[labels == 1] += 1.0
  variables = numpy_variables(model, x)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(3e-3)

  def loss_fn(p, s):
    logits, new = model.apply({"params": p, "batch_stats": s}, x, train=True,
                              mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, new["batch_stats"]

  @jax.jit
  def step(p, s, opt_state):
    (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), s, opt_state, loss, grads

  opt_state = tx.init(params)
  losses = []
  for i in range(4):
    params, new_stats, opt_state, loss, grads = step(params, stats, opt_state)
    if i == 0:
      for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path
      assert not np.allclose(new_stats["fc6_bn"]["var"], stats["fc6_bn"]["var"])
    stats = new_stats
    losses.append(float(loss))
  assert losses[-1] < losses[0], losses
