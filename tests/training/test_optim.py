"""Optimizers and schedules built from configs, against hand-computed references."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.ops.upsample import bilinear_kernel
from seg_jax.training import optim
from seg_jax.training.config import base_config


def _config(**optimizer):
  """The base config (plain SGD, constant rate) at lr 0.1 for 10 steps, with ``optimizer``."""
  config = base_config()
  config.optimizer.learning_rate = 0.1
  config.optimizer.update(optimizer)
  config.num_train_steps = 10
  return config


def _schedule(**fields):
  schedule = base_config().schedule
  schedule.update(fields)
  return schedule


PARAMS = {"backbone": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))},
          "head": {"kernel": jnp.ones((3, 2)), "scale": jnp.ones((2,))}}


def _update(config, grads, params=PARAMS):
  tx, _ = optim.create_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_weight_decay_skips_biases_and_norm_params():
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  updates = _update(_config(weight_decay=0.5), zeros)
  np.testing.assert_allclose(updates["backbone"]["kernel"], -0.1 * 0.5 * np.ones((3, 3)))
  np.testing.assert_allclose(updates["head"]["kernel"], -0.05 * np.ones((3, 2)))
  np.testing.assert_allclose(updates["backbone"]["bias"], 0.0)
  np.testing.assert_allclose(updates["head"]["scale"], 0.0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_lr_multipliers_and_frozen(name):
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  plain = _update(_config(name=name), grads)
  scaled = _update(_config(name=name, lr_multipliers={"^backbone/": 0.1, "scale$": 0.0}), grads)
  np.testing.assert_allclose(scaled["backbone"]["kernel"], 0.1 * plain["backbone"]["kernel"],
                             rtol=1e-6)
  np.testing.assert_allclose(scaled["head"]["kernel"], plain["head"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(scaled["head"]["scale"], 0.0)


def test_grad_clipping_by_global_norm():
  grads = jax.tree.map(lambda p: 10.0 * jnp.ones_like(p), PARAMS)
  norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))))
  updates = _update(_config(grad_clip_norm=1.0), grads)
  np.testing.assert_allclose(updates["backbone"]["bias"], -0.1 * 10.0 / norm * np.ones(3),
                             rtol=1e-5)


def test_momentum_sgd_matches_reference():
  config = _config(momentum=0.9)
  tx, _ = optim.create_optimizer(config)
  params = {"w": jnp.array([1.0, -2.0])}
  state, velocity, expected = tx.init(params), np.zeros(2), np.array([1.0, -2.0])
  for step in range(3):
    grads = {"w": params["w"] * (step + 1)}
    velocity = 0.9 * velocity + np.asarray(grads["w"])
    expected = expected - 0.1 * velocity
    updates, state = tx.update(grads, state, params)
    params = {"w": params["w"] + updates["w"]}
  np.testing.assert_allclose(params["w"], expected, rtol=1e-6)
  # name='momentum' is the same SGD; it needs a momentum (the base's 0 is plain SGD).
  grads = {"w": jnp.array([0.5, 1.0])}
  same = _update(_config(name="momentum", momentum=0.9), grads, params)
  np.testing.assert_array_equal(same["w"], _update(config, grads, params)["w"])
  with pytest.raises(ValueError, match="optimizer.momentum > 0, got 0.0"):
    optim.create_optimizer(_config(name="momentum"))


def test_schedules():
  poly = optim.make_schedule(_schedule(name="poly", power=0.9), 1.0, 100)
  for step in (0, 10, 50, 99):
    np.testing.assert_allclose(poly(step), (1 - step / 100) ** 0.9, rtol=1e-5)
  warm = optim.make_schedule(_schedule(name="warmup_cosine", warmup_steps=10, end_value=0.0),
                             2.0, 110)
  np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(60), warm(110)],
                             [0.0, 1.0, 2.0, 1.0, 0.0], atol=1e-5)
  cosine = optim.make_schedule(_schedule(name="cosine"), 1.0, 100)
  np.testing.assert_allclose(cosine(50), 0.5, rtol=1e-5)
  with pytest.raises(ValueError, match="unknown schedule"):
    optim.make_schedule(_schedule(name="step"), 1.0, 10)
  with pytest.raises(ValueError, match="unknown optimizer"):
    optim.create_optimizer(_config(name="lbfgs2"))


@pytest.mark.parametrize("variant", ["fcn32s_voc", "fcn16s_voc", "fcn8s_voc"])
def test_fcn_voc_recipe_matches_the_caffe_solver(variant):
  """The VOC recipe's optimizer against Caffe's SGD written out in numpy.

  Caffe: ``v = momentum * v + lr * lr_mult * (g + weight_decay * decay_mult * w)``,
  ``w -= v``, with lr_mult 1 / decay_mult 1 for kernels, 2 / 0 for biases and lr_mult 0
  for every Deconvolution (upsampling) kernel.
  """
  config = importlib.import_module(f"experiments.configs.{variant}").get_config()
  lr, momentum, decay = 1e-3, 0.99, 5e-4  # the recipe's lr is too small to see in float32
  assert (config.optimizer.momentum, config.optimizer.weight_decay) == (momentum, decay)
  config.optimizer.learning_rate = lr
  rng = np.random.default_rng(0)
  params = {"score_pool4": {"kernel": rng.normal(size=(1, 1, 4, 3)), "bias": rng.normal(size=3)},
            "fc6": {"kernel": rng.normal(size=(2, 2, 4, 4)), "bias": rng.normal(size=4)},
            "upscore2": {"kernel": np.asarray(bilinear_kernel(4, 3))},
            "upscore8": {"kernel": np.asarray(bilinear_kernel(16, 3))}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  rules = {"kernel": (1.0, 1.0), "bias": (2.0, 0.0)}  # (lr_mult, decay_mult)
  expected = jax.tree.map(np.float64, params)
  velocity = jax.tree.map(np.zeros_like, expected)
  tx, _ = optim.create_optimizer(config)
  state = tx.init(params)
  for step in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for layer, leaves in expected.items():
      for name in leaves:
        lr_mult, decay_mult = (0.0, 0.0) if layer.startswith("upscore") else rules[name]
        g = np.float64(grads[layer][name]) + decay * decay_mult * leaves[name]
        velocity[layer][name] = momentum * velocity[layer][name] + lr * lr_mult * g
        leaves[name] = leaves[name] - velocity[layer][name]
    for layer, leaves in expected.items():
      for name, want in leaves.items():
        np.testing.assert_allclose(params[layer][name], want, rtol=2e-6, atol=1e-7,
                                   err_msg=f"{layer}/{name} step {step}")
  # Frozen upsampling: exactly bilinear, bit for bit; a bias step is exactly twice a kernel's.
  np.testing.assert_array_equal(params["upscore2"]["kernel"], bilinear_kernel(4, 3))
  np.testing.assert_array_equal(params["upscore8"]["kernel"], bilinear_kernel(16, 3))
  tx, _ = optim.create_optimizer(config)
  same = {"w": {"kernel": jnp.ones((3,)).reshape(1, 3), "bias": jnp.zeros((3,))}}
  grads = {"w": {"kernel": jnp.full((1, 3), 0.5), "bias": jnp.full((3,), 0.5)}}
  updates, _ = tx.update(grads, tx.init(same), same)
  np.testing.assert_allclose(updates["w"]["kernel"], -lr * (0.5 + decay), rtol=1e-6)
  np.testing.assert_array_equal(updates["w"]["bias"], np.float32(-2 * lr) * np.float32(0.5))
