"""VGG: parameter names, taps, torchvision head, convolutionalization, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import get_model
from seg_jax.models.vgg import VGG, adaptive_avg_pool, convolutionalize, vgg_tap_names

WIDTH = 1 / 16


pytestmark = pytest.mark.usefixtures("fast_compile")


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def numpy_variables(model, x, seed=0, **kwargs):
  """He-scaled random variables from numpy (tracing init only: RNG compiles are slow on CPU)."""
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return (rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1])))
    return 0.01 * rng.standard_normal(leaf.shape)

  return jax.tree_util.tree_map_with_path(lambda p, l: np.float32(fill(p, l)), shapes)


@pytest.mark.parametrize("depth", [16, 19])
def test_param_names_and_shapes(depth):
  model = get_model(f"vgg{depth}", width=WIDTH, num_classes=7)
  x = jnp.zeros((1, 32, 32, 3))
  params = _shapes(jax.eval_shape(model.init, jax.random.key(0), x)["params"])
  convs = [t for t in vgg_tap_names(depth) if t.startswith("conv")]
  assert list(params) == convs + ["fc6", "fc7", "fc8"]
  assert len(convs) == depth - 3
  assert params["conv1_1"] == {"kernel": (3, 3, 3, 4), "bias": (4,)}
  assert params[convs[-1]]["kernel"] == (3, 3, 32, 32)
  assert params["fc6"]["kernel"] == (7 * 7 * 32, 256)
  assert params["fc8"]["kernel"] == (256, 7)


def test_capture_returns_taps_and_stops_early():
  model = VGG(depth=19, width=WIDTH, include_top=False)
  x = jnp.zeros((2, 40, 48, 3))
  taps = ["relu1_1", "relu4_2", "pool2", "conv3_4"]
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, capture=taps))
  # Nothing deeper than conv4_2 is built.
  assert list(variables["params"])[-1] == "conv4_2"
  out = jax.eval_shape(lambda v: model.apply(v, x, capture=taps), variables)
  assert sorted(out) == sorted(taps)
  assert out["relu1_1"].shape == (2, 40, 48, 4)
  assert out["pool2"].shape == (2, 10, 12, 8)
  assert out["conv3_4"].shape == (2, 10, 12, 16)
  assert out["relu4_2"].shape == (2, 5, 6, 32)
  with pytest.raises(ValueError, match="conv5_4"):
    VGG(depth=16).init(jax.random.key(0), x, capture=["conv5_4"])


def test_avg_pooling_and_taps_values():
  model = VGG(width=WIDTH, pooling="avg", include_top=False)
  x = jax.random.normal(jax.random.key(1), (1, 12, 10, 3))
  variables = numpy_variables(model, x, capture=["pool1"])
  out = jax.jit(model.apply, static_argnames="capture")(
      variables, x, capture=("conv1_1", "relu1_1", "relu1_2", "pool1"))
  np.testing.assert_allclose(out["relu1_1"], np.maximum(out["conv1_1"], 0))
  r = np.asarray(out["relu1_2"])
  expected = r.reshape(1, 6, 2, 5, 2, 4).mean(axis=(2, 4))
  np.testing.assert_allclose(out["pool1"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (7, 7), (9, 16)])
def test_adaptive_avg_pool_matches_torch_bins(size):
  x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
  expected = np.zeros((2, 7, 7, 3), np.float32)
  for i in range(7):
    h0, h1 = (i * size[0]) // 7, int(np.ceil((i + 1) * size[0] / 7))
    for j in range(7):
      w0, w1 = (j * size[1]) // 7, int(np.ceil((j + 1) * size[1] / 7))
      expected[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), (7, 7)), expected, rtol=1e-5,
                             atol=1e-6)


def test_convolutionalized_classifier_is_a_dense_predictor():
  classifier = VGG(width=WIDTH, num_classes=5)
  dense = VGG(width=WIDTH, num_classes=5, convolutional_fc=True)
  x = jax.random.normal(jax.random.key(2), (1, 224, 224, 3))
  variables = numpy_variables(classifier, x)
  logits = jax.jit(classifier.apply)(variables, x)
  conv_vars = convolutionalize(variables)
  assert conv_vars["params"]["fc6"]["kernel"].shape == (7, 7, 32, 256)
  assert conv_vars["params"]["fc8"]["kernel"].shape == (1, 1, 256, 5)
  apply = jax.jit(dense.apply)
  score_map = apply(conv_vars, x)
  assert score_map.shape == (1, 1, 1, 5)
  np.testing.assert_allclose(score_map[:, 0, 0], logits, rtol=1e-4, atol=1e-5)
  # A larger image gives a spatial map: one score vector per 32-pixel step.
  big = apply(conv_vars, jnp.zeros((1, 256, 320, 3)))
  assert big.shape == (1, 2, 4, 5)
  with pytest.raises(ValueError, match="pool5"):
    dense.apply(conv_vars, jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("image, pool5", [((128, 128), (4, 4)), ((96, 160), (3, 5)),
                                          ((256, 256), (8, 8))])
def test_convolutionalize_folds_the_adaptive_pool_of_a_small_classifier(image, pool5):
  """A classifier trained on images smaller (or larger) than 224 px saw its pool5 stretched
  (averaged) to 7x7: folded into fc6, the conv net computes the same logits on pool5."""
  classifier = VGG(width=WIDTH, num_classes=5)
  x = jax.random.normal(jax.random.key(4), (2, *image, 3))
  variables = numpy_variables(classifier, x)
  logits = jax.jit(classifier.apply)(variables, x)
  folded = convolutionalize(variables, pool5)
  assert folded["params"]["fc6"]["kernel"].shape == (*pool5, 32, 256)
  # Independent reference of the fold: PyTorch's adaptive bins, summed explicitly.
  kernel = np.asarray(variables["params"]["fc6"]["kernel"]).reshape(7, 7, 32, 256)
  expected = np.zeros((*pool5, 32, 256))
  for i in range(7):
    rows = range((i * pool5[0]) // 7, -((-(i + 1) * pool5[0]) // 7))
    for j in range(7):
      cols = range((j * pool5[1]) // 7, -((-(j + 1) * pool5[1]) // 7))
      for h in rows:
        for w in cols:
          expected[h, w] += kernel[i, j] / (len(rows) * len(cols))
  np.testing.assert_allclose(folded["params"]["fc6"]["kernel"], expected, rtol=1e-5,
                             atol=1e-7)
  if min(pool5) >= 4:
    dense = VGG(width=WIDTH, num_classes=5, convolutional_fc=True, fc6_size=pool5[0])
    score_map = jax.jit(dense.apply)(folded, x)
    assert score_map.shape == (2, 1, 1, 5)
    np.testing.assert_allclose(score_map[:, 0, 0], logits, rtol=1e-4, atol=1e-4)
    # Without the fold (the 7x7 reshape) the same network does not give the logits.
    assert not np.allclose(convolutionalize(variables)["params"]["fc6"]["kernel"][:4, :4],
                           folded["params"]["fc6"]["kernel"][:4, :4], atol=1e-3)


def test_gradients_and_training_reduce_loss():
  model = VGG(width=WIDTH, num_classes=3, dropout_rate=0.0)
  x = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
  labels = jnp.array([0, 1, 2, 1])
  params = numpy_variables(model, x)["params"]

  def loss_fn(p):
    logits = model.apply({"params": p}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  tx = optax.adam(1e-3)

  @jax.jit
  def step(p, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, grads

  opt_state = tx.init(params)
  losses = []
  for i in range(6):
    params, opt_state, loss, grads = step(params, opt_state)
    if i == 0:
      for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        if path[-1].key == "kernel":
          assert np.any(g != 0), path
    losses.append(float(loss))
  assert losses[-1] < losses[0]
