"""Baselines: patch classifier (patchwise == dense), full-resolution FCN, encoder-decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import get_model
from seg_jax.models.baselines import (UPSAMPLINGS, EncoderDecoder, FullResFCN, PatchClassifier,
                                      segment_dense, segment_patchwise)


pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def patch_setup():
  model = PatchClassifier(num_classes=3, width=0.25, patch_size=11, num_convs=3)
  variables = jax.jit(functools.partial(model.init, method=PatchClassifier.classify_patches))(
      jax.random.key(0), jnp.zeros((1, 11, 11, 3)))
  image = np.random.default_rng(0).normal(size=(18, 21, 3)).astype(np.float32)
  return model, variables, image


def test_patchwise_equals_dense(patch_setup):
  model, variables, image = patch_setup
  naive = segment_patchwise(model, variables, image, batch_size=128)  # 378 px: padded batch
  dense = segment_dense(model, variables, image)
  assert naive.shape == dense.shape == (18, 21, 3)
  np.testing.assert_allclose(naive, dense, rtol=1e-5, atol=1e-5)
  # __call__ is the dense evaluation with reflect padding: logits at input resolution.
  called = jax.jit(model.apply)(variables, jnp.asarray(image)[None])[0]
  np.testing.assert_allclose(called, dense, rtol=1e-5, atol=1e-5)


def test_patchwise_matches_numpy_cut_patches(patch_setup):
  model, variables, image = patch_setup
  naive = segment_patchwise(model, variables, image, batch_size=64)
  padded = np.pad(image, ((5, 5), (5, 5), (0, 0)), mode="reflect")
  pixels = [(0, 0), (17, 20), (9, 3), (4, 16)]
  patches = np.stack([padded[i:i + 11, j:j + 11] for i, j in pixels])
  logits = jax.jit(functools.partial(model.apply, method=PatchClassifier.classify_patches))(
      variables, patches)
  np.testing.assert_allclose(np.asarray(logits), np.stack([naive[p] for p in pixels]),
                             rtol=1e-5, atol=1e-5)


def test_patch_classifier_rejects_even_patch():
  with pytest.raises(ValueError, match="odd"):
    PatchClassifier(num_classes=2, patch_size=10).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_full_res_fcn_receptive_field():
  model = FullResFCN(num_classes=2, width=0.25, num_layers=3, dilation=(1, 2, 1))
  assert model.receptive_field() == 9
  x = jax.random.normal(jax.random.key(1), (1, 24, 24, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  apply = jax.jit(model.apply)
  base = apply(variables, x)
  assert base.shape == (1, 24, 24, 2)
  changed = apply(variables, x.at[0, 12, 12].add(10.0))
  moved = np.argwhere(np.abs(np.asarray(changed - base))[0].max(-1) > 0)
  assert len(moved) > 0
  assert moved.min() >= 12 - 4 and moved.max() <= 12 + 4  # radius (9 - 1) / 2


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
def test_encoder_decoder_shapes_and_gradients(upsampling):
  model = get_model("encoder_decoder", num_classes=3, width=1 / 8, num_stages=2,
                    upsampling=upsampling)
  x = jax.random.normal(jax.random.key(1), (2, 16, 20, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 16, 20, 3)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return jnp.mean(logits**2)

  norms = [float(jnp.linalg.norm(g))
           for g in jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(variables["params"]))]
  assert np.all(np.isfinite(norms)) and sum(norms) > 0


def test_encoder_decoder_rejects_bad_input():
  with pytest.raises(ValueError, match="divisible by 8"):
    EncoderDecoder(num_classes=2, num_stages=3).init(jax.random.key(0), jnp.zeros((1, 12, 16, 3)))
  with pytest.raises(ValueError, match="upsampling"):
    EncoderDecoder(num_classes=2, upsampling="cubic").init(jax.random.key(0),
                                                           jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("name", ["full_res_fcn", "encoder_decoder", "patch_classifier"])
def test_few_steps_reduce_loss(name):
  kwargs = {"patch_classifier": dict(patch_size=7, num_convs=2),
            "encoder_decoder": dict(num_stages=2)}.get(name, {})
  model = get_model(name, num_classes=2, width=1 / 8, **kwargs)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  # Labels constant on 4x4 blocks: reachable through the encoder-decoder's bottleneck too.
  block_mean = images[..., 0].reshape(2, 4, 4, 4, 4).mean(axis=(2, 4))
  labels = np.repeat(np.repeat(block_mean > 0, 4, axis=1), 4, axis=2).astype(np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  params, stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": stats}, images, train=True,
                                    mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates.get("batch_stats", {})
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  losses = []
  for _ in range(8):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.9 * losses[0], losses
