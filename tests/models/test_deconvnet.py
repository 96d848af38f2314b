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


def test_fc6_size_is_the_paper_geometry_on_the_classifier_grid():
  """fc6_size=4 with 'VALID': a 128 px image's 4x4 pool5 -> 1x1 -> grown back to 4x4."""
  model = DeconvNet(num_classes=2, width=WIDTH, fc_padding="VALID", fc6_size=4)
  out, state = jax.eval_shape(
      functools.partial(model.init_with_output, mutable=["params", "batch_stats", "intermediates"]),
      jax.random.key(0), jnp.zeros((1, 128, 160, 3)))
  assert out.shape == (1, 128, 160, 2)
  assert state["params"]["fc6"]["kernel"].shape[:2] == (4, 4)
  assert state["params"]["deconv_fc6"]["kernel"].shape[:2] == (4, 4)
  assert state["intermediates"]["unpool5_input"][0].shape == (1, 4, 5, 32)
  with pytest.raises(ValueError, match="pool5 >= 4x4"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 96, 128, 3)))
  same = DeconvNet(num_classes=2, width=WIDTH, fc6_size=3)
  assert jax.eval_shape(same.init_with_output, jax.random.key(0),
                        jnp.zeros((1, 64, 64, 3)))[0].shape == (1, 64, 64, 2)
  with pytest.raises(ValueError, match="odd with fc_padding='SAME', got 4"):
    jax.eval_shape(DeconvNet(num_classes=2, width=WIDTH, fc6_size=4).init, jax.random.key(0),
                   jnp.zeros((1, 64, 64, 3)))


def test_each_unpooling_uses_its_mirrored_encoder_indices(numpy_variables, check_unpool_routing):
  model = DeconvNet(num_classes=3, width=WIDTH)
  x = jax.random.normal(jax.random.key(1), (2, 36, 52, 3))
  variables = numpy_variables(model, x)
  apply = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))
  out, state = apply(variables, x)
  assert out.shape == (2, 36, 52, 3)
  inter = state["intermediates"]
  checked = [check_unpool_routing(inter, stage) for stage in range(1, 6)]
  assert all(count > 0 for count in checked), checked


def test_training_updates_batch_stats_and_reduces_loss(numpy_variables):
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
