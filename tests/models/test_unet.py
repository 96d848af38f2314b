"""U-Net: valid-geometry arithmetic, shapes for both paddings, gradients and a few steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import get_model
from seg_jax.models.unet import (UNet, unet_valid_input_size, unet_valid_margin,
                                 unet_valid_output_size)


pytestmark = pytest.mark.usefixtures("fast_compile")


def _brute_force_output_size(size, depth):
  """Walks the layers one by one, as the paper's figure does."""
  sizes = []
  for _ in range(depth):
    size -= 4
    if size <= 0 or size % 2:
      return None
    sizes.append(size)
    size //= 2
  size -= 4
  for _ in range(depth):
    size = 2 * size - 4
    if size <= 0:
      return None
  return size


def test_paper_geometry_numbers():
  assert unet_valid_output_size(572, 4) == 388
  assert unet_valid_input_size(388, 4) == 572
  assert unet_valid_margin(4) == (572 - 388) // 2 == 92


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_size_helpers_match_brute_force(depth):
  for size in range(1, 400):
    expected = _brute_force_output_size(size, depth)
    if expected is None:
      with pytest.raises(ValueError, match="next valid input size"):
        unet_valid_output_size(size, depth)
    else:
      assert unet_valid_output_size(size, depth) == expected
      assert unet_valid_input_size(expected, depth) == size
      assert size - expected == 2 * unet_valid_margin(depth)


def test_unreachable_output_size_raises():
  with pytest.raises(ValueError, match="next reachable output size is 404"):
    unet_valid_input_size(390, 4)


def test_valid_unet_572_to_388_shapes():
  model = UNet(num_classes=2, width=1 / 16, depth=4, padding="valid")
  x = jax.ShapeDtypeStruct((1, 572, 572, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out = jax.eval_shape(model.apply, variables, x)
  assert out.shape == (1, 388, 388, 2)
  # Channel doubling per level, rounded width multiplier (64/16 = 4 at level 0).
  assert variables["params"]["down0_conv0"]["Conv_0"]["kernel"].shape == (3, 3, 3, 4)
  assert variables["params"]["bottleneck_conv1"]["Conv_0"]["kernel"].shape == (3, 3, 64, 64)


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_same_unet_shapes_and_gradients(upsampling):
  model = get_model("unet", num_classes=3, width=1 / 16, depth=2, upsampling=upsampling)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 32, 32, 3)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return jnp.mean(logits**2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0


def test_valid_unet_small_forward_crops_skips():
  model = UNet(num_classes=2, width=1 / 16, depth=2, padding="valid", use_batch_norm=False)
  x = jnp.ones((1, 48, 52, 3))  # 48 -> 8 and 52 -> 12 at depth 2
  out, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert out.shape == (1, 8, 12, 2)


def test_bad_sizes_raise():
  model = UNet(num_classes=2, width=1 / 16, depth=3)
  with pytest.raises(ValueError, match="divisible by 8"):
    model.init(jax.random.key(0), jnp.ones((1, 36, 32, 3)))
  with pytest.raises(ValueError, match="next valid input size"):
    UNet(num_classes=2, width=1 / 16, depth=2, padding="valid").init(
        jax.random.key(0), jnp.ones((1, 50, 50, 3)))
  with pytest.raises(ValueError, match="padding"):
    UNet(num_classes=2, padding="full").init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))


def test_few_steps_reduce_loss():
  model = UNet(num_classes=2, width=1 / 16, depth=2)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  labels = (images[..., 0] > 0).astype(np.int32)  # learnable from the pixel itself
  variables = jax.jit(model.init)(jax.random.key(0), images)
  tx = optax.adam(1e-2)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                    train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, stats = variables["params"], variables["batch_stats"]
  losses = []
  for _ in range(8):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.9 * losses[0], losses
