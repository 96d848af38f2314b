import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.losses import class_pixel_statistics, median_frequency_weights, pixel_cross_entropy


def _ce_loop(logits, labels, ignore_index, weights):
  total, norm = 0.0, 0.0
  flat_logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
  for row, label in zip(flat_logits, labels.ravel()):
    if label == ignore_index:
      continue
    log_z = np.log(np.exp(row - row.max()).sum()) + row.max()
    w = 1.0 if weights is None else weights[label]
    total += w * (log_z - row[label])
    norm += w
  return total / norm


@pytest.mark.parametrize("use_weights", [False, True])
def test_cross_entropy_matches_loop(use_weights):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32) * 3
  labels = rng.integers(0, 4, size=(2, 5, 6))
  labels[rng.random(labels.shape) < 0.3] = 255
  weights = rng.uniform(0.5, 2.0, size=4).astype(np.float32) if use_weights else None
  got = jax.jit(lambda l, y: pixel_cross_entropy(l, y, class_weights=weights))(logits, labels)
  np.testing.assert_allclose(float(got), _ce_loop(logits, labels, 255, weights), rtol=1e-5)


def test_cross_entropy_ignores_all_pixels_without_nan_and_has_zero_gradient():
  logits = jnp.ones((1, 3, 3, 2))
  labels = jnp.full((1, 3, 3), 255)
  loss, grad = jax.value_and_grad(pixel_cross_entropy)(logits, labels)
  assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_ignored_pixels_get_no_gradient():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, 2, 2, 3)), jnp.float32)
  labels = jnp.array([[[0, 255], [2, 1]]])
  grad = jax.grad(pixel_cross_entropy)(logits, labels)
  assert not np.any(np.asarray(grad[0, 0, 1]))
  assert np.all(np.abs(np.asarray(grad[0, 0, 0])) > 0)


def test_shape_and_weight_errors():
  with pytest.raises(ValueError, match="do not match"):
    pixel_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 3), jnp.int32))
  with pytest.raises(ValueError, match="class_weights"):
    pixel_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32),
                        class_weights=jnp.ones(2))


def test_median_frequency_weights_by_hand():
  # image A (4 px): classes 0,0,0,1 ; image B (4 px): classes 0,2,2,255
  maps = [np.array([[0, 0], [0, 1]]), np.array([[0, 2], [2, 255]])]
  class_pixels, present_pixels = class_pixel_statistics(maps, num_classes=4)
  np.testing.assert_array_equal(class_pixels, [4, 1, 2, 0])
  np.testing.assert_array_equal(present_pixels, [7, 4, 3, 0])
  freq = np.array([4 / 7, 1 / 4, 2 / 3])
  expected = np.median(freq) / freq
  np.testing.assert_allclose(median_frequency_weights(class_pixels, present_pixels)[:3], expected,
                             rtol=1e-6)
  assert median_frequency_weights(class_pixels, present_pixels)[3] == 0.0
