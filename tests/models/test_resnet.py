"""ResNet backbone: torchvision structure (parameter counts, key mapping), frozen BN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.models.resnet import (Bottleneck, FrozenBatchNorm, ResNet, adapt_transferred,
                                   resnet_params_from_torchvision)

# torchvision parameter counts without the 1000-way fc layer (weights + BN affine).
TORCHVISION_COUNTS = {18: 11_689_512 - 513_000, 50: 25_557_032 - 2_049_000}


def _shapes(model, size=64):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("depth", [18, 50])
def test_parameter_count_matches_torchvision(depth):
  variables = _shapes(ResNet(depth=depth, frozen_bn=True))
  stats = variables["batch_stats"]
  affine = _count(jax.tree_util.tree_map_with_path(
      lambda p, x: x if p[-1].key in ("scale", "bias") else np.zeros(0), stats))
  assert _count(variables["params"]) + affine == TORCHVISION_COUNTS[depth]
  trainable = _shapes(ResNet(depth=depth, frozen_bn=False))
  assert _count(trainable["params"]) == TORCHVISION_COUNTS[depth]


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_feature_strides_and_channels(depth):
  model = ResNet(depth=depth, width=0.25)
  shapes = jax.eval_shape(lambda: model.apply(
      model.init(jax.random.key(0), jnp.zeros((1, 64, 96, 3))), jnp.zeros((2, 64, 96, 3))))
  expansion = 4 if depth >= 50 else 1
  for i, key in enumerate(("c2", "c3", "c4", "c5")):
    stride = 4 * 2 ** i
    assert shapes[key].shape == (2, 64 // stride, 96 // stride, 16 * 2 ** i * expansion)
  assert model.stage_channels() == tuple(16 * 2 ** i * expansion for i in range(4))


@pytest.mark.parametrize("depth,frozen", [(18, True), (50, False)])
def test_torchvision_import_covers_every_variable(depth, frozen, torchvision_resnet_keys):
  rng = np.random.default_rng(0)
  state = {k: rng.normal(size=s).astype(np.float32)
           for k, s in torchvision_resnet_keys(depth).items()}
  converted = resnet_params_from_torchvision(state, frozen_bn=frozen)
  expected = _shapes(ResNet(depth=depth, frozen_bn=frozen))
  got_shapes = jax.tree_util.tree_map(lambda x: x.shape, converted)
  want_shapes = jax.tree_util.tree_map(lambda x: x.shape, dict(expected))
  assert got_shapes == want_shapes
  kernel = converted["params"]["layer2_0"]["downsample_0"]["kernel"]
  np.testing.assert_array_equal(kernel, state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))


def test_frozen_batch_norm_is_constant_affine():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 4)), jnp.float32)
  stats = {"scale": jnp.array([1.0, 2.0, 3.0, 4.0]), "bias": jnp.array([0.0, 1.0, 0.0, -1.0]),
           "mean": jnp.array([0.5, 0.0, -1.0, 2.0]), "var": jnp.array([1.0, 4.0, 0.25, 9.0])}
  y, updates = FrozenBatchNorm().apply({"batch_stats": stats}, x, mutable=["batch_stats"])
  want = (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * stats["scale"] + stats["bias"]
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, updates["batch_stats"],
                                                       stats))


def test_trainable_batch_norm_updates_and_gradients():
  # One bottleneck block (not a whole ResNet) keeps the compile short.
  block = Bottleneck(4, stride=2, downsample=True, frozen_bn=False)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 6)), jnp.float32)
  # An 'rbg' key: threefry initialisers compile ~10x slower on CPU (see report).
  variables = jax.jit(block.init)(jax.random.key(0, impl="rbg"), x)

  def loss(params):
    out, updates = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                               train=True, mutable=["batch_stats"])
    return jnp.mean(out ** 2), updates

  grads, updates = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  # bn3 starts at zero scale (residual branch = identity at init), so its scale and the
  # shortcut get gradients while the branch's convs do not yet.
  assert float(jnp.abs(grads["bn3"]["scale"]).sum()) > 0
  assert float(jnp.abs(grads["downsample_0"]["kernel"]).sum()) > 0
  before = variables["batch_stats"]["bn1"]["mean"]
  assert not np.allclose(updates["batch_stats"]["bn1"]["mean"], before)


def _randomised(tree, seed):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype) for x in leaves])


def test_trained_batch_norm_run_moves_into_frozen_layers_and_back():
  # A block trained with ordinary BatchNorm, transferred into the same block with frozen BN
  # (a detector's second stage): the frozen block computes the trained block's eval map.
  trained = Bottleneck(4, stride=2, downsample=True, frozen_bn=False)
  frozen = Bottleneck(4, stride=2, downsample=True, frozen_bn=True)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 6)), jnp.float32)
  key = jax.random.key(0, impl="rbg")
  source = jax.jit(trained.init)(key, x)
  source = {"params": _randomised(source["params"], 3),
            "batch_stats": _randomised(source["batch_stats"], 4)}
  target = jax.jit(frozen.init)(key, x)
  moved = adapt_transferred(source, target)
  assert set(moved["params"]) == {k for k in source["params"] if not k.startswith("bn")} - {
      "downsample_1"}
  assert (jax.tree_util.tree_structure(moved["batch_stats"])
          == jax.tree_util.tree_structure(target["batch_stats"]))
  assert (jax.tree_util.tree_structure(moved["params"])
          == jax.tree_util.tree_structure(target["params"]))
  want = trained.apply(source, x, train=False)
  got = frozen.apply(moved, x, train=False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # and back: the frozen run into a trainable block gives the same inference map again
  back = adapt_transferred(moved, source)
  np.testing.assert_allclose(np.asarray(trained.apply(back, x, train=False)), np.asarray(want),
                             rtol=1e-5, atol=1e-5)
  # a run already in the target's layout passes through unchanged
  same = adapt_transferred(source, source)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, same, source))


def test_bad_depth():
  with pytest.raises(ValueError, match="depth"):
    ResNet(depth=20).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
