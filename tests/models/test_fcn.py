"""FCN-32s/16s/8s: output size for any input, reference init, skip alignment, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax.models import get_model
from seg_jax.models.fcn import FCN, crop_offsets
from seg_jax.ops.upsample import bilinear_kernel

WIDTH = 1 / 16


pytestmark = pytest.mark.usefixtures("fast_compile")


def numpy_variables(model, x, seed=0, **kwargs):
  """He-scaled random variables from numpy (tracing init only: RNG compiles are slow on CPU)."""
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "kernel":
      return rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    return 0.01 * rng.standard_normal(leaf.shape)

  return jax.tree_util.tree_map_with_path(lambda p, l: np.float32(fill(p, l)), shapes)


@pytest.mark.parametrize("fc6_size", [7, 4, 5])
@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("size", [(1, 1), (32, 32), (37, 37), (64, 48), (31, 97), (128, 128)])
def test_output_has_input_size(variant, size, fc6_size):
  model = get_model(f"fcn{variant}", num_classes=3, width=WIDTH, fc6_size=fc6_size)
  x = jnp.zeros((2, *size, 3))
  out, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert out.shape == (2, *size, 3)
  assert variables["params"]["fc6"]["kernel"].shape == (fc6_size, fc6_size, 32, 256)


def test_crop_offsets_are_the_reference_ones_for_a_7x7_fc6():
  assert crop_offsets(7) == {"32s": 19, "pool4": 5, "16s": 27, "pool3": 9, "8s": 31}
  assert crop_offsets(4) == {"32s": 67, "pool4": 2, "16s": 75, "pool3": 3, "8s": 79}
  for bad in (3, 8, 0):
    with pytest.raises(ValueError, match=f"fc6_size must be one of .*got {bad}"):
      FCN(num_classes=2, fc6_size=bad).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_reference_initialisation():
  model = FCN(num_classes=3, variant="8s", width=WIDTH)
  x = jax.random.normal(jax.random.key(1), (1, 33, 35, 3))
  out, variables = jax.jit(model.init_with_output)(jax.random.key(0), x)
  params = variables["params"]
  for name, size in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
    np.testing.assert_allclose(params[name]["kernel"], bilinear_kernel(size, 3))
    assert "bias" not in params[name]
  for name in ("score_fr", "score_pool4", "score_pool3"):
    assert not np.any(params[name]["kernel"])
  assert out.shape == (1, 33, 35, 3) and not np.any(out)


# (stride, index shift of the scored map relative to the pool, reference crop) per variant
# for the reference 7x7 fc6; a k x k fc6 moves the score grid by (7 - k) / 2 pool5 cells.
GEOMETRY = {"32s": (32, 3, 19), "16s": (16, 5, 27), "8s": (8, 9, 31)}


def _geometry(variant, fc6_size):
  """(stride, index shifts, crop): for 32s the shifts are fc6's middle taps (two if even)."""
  factor, shift, crop = GEOMETRY[variant]
  moved = 7 - fc6_size
  if variant == "32s":
    shifts = [fc6_size // 2] if fc6_size % 2 else [fc6_size // 2 - 1, fc6_size // 2]
  else:
    shifts = [shift - (moved if variant == "16s" else 2 * moved)]
  return factor, shifts, crop + 16 * moved


def _tent(i, factor):
  """1-D bilinear upsampling kernel of size 2 * factor, zero outside."""
  inside = (i >= 0) & (i < 2 * factor)
  return np.where(inside, 1 - np.abs(i - (factor - 0.5)) / factor, 0.0)


@pytest.mark.parametrize("fc6_size", [7, 4])
@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_skip_alignment_maps_a_delta_to_its_cell(variant, fc6_size):
  """Identity trunk + only one score path: a delta must come back centred on its pool cell.

  conv1_1 pads by 100, so with centre-tap identity kernels padded coordinate ``u = y + 99``
  lands in cell ``u // f`` of the stride-``f`` pool. The final map must be the bilinear tent
  centred on that cell's centre in image coordinates, ``f * cell - 99 + (f - 1) / 2``.
  An even fc6 (4x4) has no centre tap: its two middle taps per axis share the weight, and
  the map is the mean of the tents they give.
  """
  factor, shifts, crop = _geometry(variant, fc6_size)
  size = 96
  model = FCN(num_classes=2, variant=variant, width=WIDTH, fc6_size=fc6_size)
  positions = [(0, 0), (5, 17), (39, 39), (20, 31), (12, 3), (40, 50), (70, 45), (88, 62),
               (95, 95)]
  x = np.zeros((len(positions), size, size, 3), np.float32)
  for b, (y, xx) in enumerate(positions):
    x[b, y, xx, 0] = 1.0
  variables = numpy_variables(model, x)
  params = jax.tree_util.tree_map(np.zeros_like, variables["params"])
  for name, p in params.items():
    if name.startswith("conv"):
      p["kernel"][1, 1, 0, 0] = 1.0
  path = {"32s": ("fc6", "fc7", "score_fr"), "16s": ("score_pool4",),
          "8s": ("score_pool3",)}[variant]
  for name in path:
    kernel = params[name]["kernel"]
    k = kernel.shape[0]
    taps = [k // 2] if k % 2 else [k // 2 - 1, k // 2]  # an even kernel: two middle taps
    for ty in taps:
      for tx in taps:
        kernel[ty, tx, 0, 0] = 1.0 / len(taps) ** 2
  final = {"32s": "upscore", "16s": "upscore16", "8s": "upscore8"}[variant]
  params[final]["kernel"] = np.asarray(bilinear_kernel(2 * factor, 2))
  out = np.asarray(jax.jit(model.apply)({"params": params}, x))

  assert not np.any(out[..., 1])
  rows, checked = np.arange(size), 0
  for b, (y, xx) in enumerate(positions):
    cell_y, cell_x = (y + 99) // factor, (xx + 99) // factor
    expected = np.mean([np.outer(_tent(rows + crop - factor * (cell_y - sy), factor),
                                 _tent(rows + crop - factor * (cell_x - sx), factor))
                        for sy in shifts for sx in shifts], axis=0)
    np.testing.assert_allclose(out[b, ..., 0], expected, atol=1e-6)
    # The peak plateau is centred on the cell (which contains the delta), when in view.
    center_y = factor * cell_y - 99 + (factor - 1) / 2
    center_x = factor * cell_x - 99 + (factor - 1) / 2
    assert abs(center_y - y) <= factor / 2 and abs(center_x - xx) <= factor / 2
    plateau = factor * (len(shifts) - 1) / 2  # two tents a cell apart: flat between them
    if min(center_y, center_x) - plateau >= 0 and max(center_y, center_x) + plateau + 0.5 < size:
      peak_rows, peak_cols = np.nonzero(np.isclose(out[b, ..., 0], out[b, ..., 0].max()))
      assert (peak_rows.mean(), peak_cols.mean()) == (center_y, center_x)
      checked += 1
  assert checked >= 3


def _loss(model, params, x, labels, **kwargs):
  logits = model.apply({"params": params}, x, **kwargs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _shapes_batch(seed=0, size=32):
  """Tiny batch: class 1 inside a bright square, class 0 elsewhere."""
  rng = np.random.default_rng(seed)
  x = rng.normal(0, 0.1, (2, size, size, 3)).astype(np.float32)
  labels = np.zeros((2, size, size), np.int32)
  for b, (y0, x0) in enumerate([(4, 8), (14, 10)]):
    labels[b, y0:y0 + 12, x0:x0 + 12] = 1
    x[b, y0:y0 + 12, x0:x0 + 12] += 1.0
  return jnp.asarray(x), jnp.asarray(labels)


def test_training_reduces_loss_and_keeps_final_upsampling_frozen():
  model = FCN(num_classes=2, variant="8s", width=WIDTH, dropout_rate=0.0)
  x, labels = _shapes_batch()
  params = numpy_variables(model, x)["params"]
  frozen = params["upscore8"]["kernel"].copy()
  tx = optax.adam(1e-3)

  @jax.jit
  def step(p, opt_state, rng):
    loss, grads = jax.value_and_grad(
        lambda q: _loss(model, q, x, labels, train=True, rngs={"dropout": rng}))(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, grads

  opt_state, losses = tx.init(params), []
  for i in range(4):
    params, opt_state, loss, grads = step(params, opt_state, jax.random.key(i))
    losses.append(float(loss))
    if i == 0:
      for path, g in jax.tree_util.tree_leaves_with_path(grads):
        names = [k.key for k in path]
        assert np.all(np.isfinite(g)), names
        if names == ["upscore8", "kernel"]:
          assert not np.any(g), "frozen final upsampling received a gradient"
        else:
          assert np.any(g != 0), names
  assert losses[-1] < losses[0], losses
  np.testing.assert_array_equal(params["upscore8"]["kernel"], frozen)


UPSAMPLING = {"32s": ["upscore"], "16s": ["upscore2", "upscore16"],
              "8s": ["upscore2", "upscore_pool4", "upscore8"]}


@pytest.mark.parametrize("variant", ["16s", "8s"])
@pytest.mark.parametrize("freeze", ["final", "all", "none"])
def test_freeze_upsampling_zeroes_exactly_the_frozen_gradients(variant, freeze):
  model = FCN(num_classes=2, variant=variant, width=WIDTH, freeze_upsampling=freeze)
  x, labels = _shapes_batch(size=24)
  params = numpy_variables(model, x)["params"]
  grads = jax.jit(jax.grad(lambda p: _loss(model, p, x, labels)))(params)
  names = UPSAMPLING[variant]
  frozen = {"all": names, "final": names[-1:], "none": []}[freeze]
  for name in names:
    kernel_grad = np.asarray(grads[name]["kernel"])
    assert np.all(np.isfinite(kernel_grad))
    assert np.any(kernel_grad != 0) == (name not in frozen), (name, freeze)
  assert np.any(np.asarray(grads["score_fr"]["kernel"]) != 0)  # the rest still learns


def test_bad_freeze_upsampling():
  with pytest.raises(ValueError, match="freeze_upsampling must be one of .*'some'"):
    FCN(variant="32s", freeze_upsampling="some", width=WIDTH).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_bad_variant():
  with pytest.raises(ValueError, match="variant"):
    FCN(variant="4s").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
