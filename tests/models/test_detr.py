"""DETR model: positional encoding vs numpy, shapes, attention maps, training steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax
import pytest

from seg_jax.losses.detr import detr_loss
from seg_jax.models import get_model
from seg_jax.models.detr import MHAttentionMap, postprocess_detr
from seg_jax.models.transformer import sine_position_encoding

TINY = dict(num_classes=3, num_queries=5, d_model=16, num_heads=2, num_encoder_layers=1,
            num_decoder_layers=2, dim_feedforward=32, backbone_depth=18, backbone_width=0.125,
            with_masks=True)
SIZE = 64


pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def model_and_variables():
  """Model, variables and the initial forward pass (one compilation for both)."""
  model = get_model("detr", **TINY)
  images = jax.random.normal(jax.random.key(2), (2, SIZE, SIZE, 3))
  pad = jnp.zeros((2, SIZE, SIZE), bool).at[1, :, 40:].set(True)
  out, variables = jax.jit(model.init_with_output)(jax.random.key(0), images, pad)
  return model, variables, out


def test_sine_position_encoding_matches_loops():
  pad = np.zeros((1, 3, 4), bool)
  pad[0, :, 3] = True  # last column is padding
  pad[0, 2, :] = True
  feats = 6
  got = np.asarray(sine_position_encoding(jnp.asarray(pad), feats))
  assert got.shape == (1, 3, 4, 2 * feats)
  not_pad = ~pad[0]
  for i in range(3):
    for j in range(4):
      y = not_pad[:i + 1, j].sum() / (not_pad[:, j].sum() + 1e-6) * 2 * math.pi
      x = not_pad[i, :j + 1].sum() / (not_pad[i, :].sum() + 1e-6) * 2 * math.pi
      for half, coord in enumerate((y, x)):
        for k in range(feats):
          angle = coord / 10000 ** (2 * (k // 2) / feats)
          want = math.sin(angle) if k % 2 == 0 else math.cos(angle)
          np.testing.assert_allclose(got[0, i, j, half * feats + k], want, rtol=1e-5, atol=1e-6)


def test_attention_map_ignores_padding_and_normalises_jointly():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(2, 4, 5, 8)), jnp.float32)
  pad = np.zeros((2, 4, 5), bool)
  pad[1, :, 3:] = True
  module = MHAttentionMap(hidden_dim=8, num_heads=2)
  weights = module.apply(module.init(jax.random.key(1), q, k), q, k, jnp.asarray(pad))
  assert weights.shape == (2, 3, 2, 4, 5)
  np.testing.assert_allclose(weights.sum((2, 3, 4)), 1.0, rtol=1e-5)  # over heads and pixels
  assert float(jnp.abs(weights[1, :, :, :, 3:]).max()) == 0.0


def test_forward_shapes_and_postprocess(model_and_variables):
  _, _, out = model_and_variables
  q, c = TINY["num_queries"], TINY["num_classes"] + 1
  assert out["pred_logits"].shape == (2, q, c) and out["pred_boxes"].shape == (2, q, 4)
  assert out["aux_logits"].shape == (1, 2, q, c) and out["aux_boxes"].shape == (1, 2, q, 4)
  assert out["pred_masks"].shape == (2, q, SIZE // 4, SIZE // 4)
  assert float(out["pred_boxes"].min()) >= 0 and float(out["pred_boxes"].max()) <= 1
  det = jax.jit(postprocess_detr, static_argnums=1)(out, (SIZE, 2 * SIZE))
  scores = np.asarray(det["scores"])
  assert np.all(np.diff(scores, axis=1) <= 0)
  probs = np.asarray(jax.nn.softmax(out["pred_logits"], -1))[..., :-1]
  best = np.argmax(probs.max(-1), axis=1)
  cx, cy, w, h = np.asarray(out["pred_boxes"])[np.arange(2), best].T
  want = np.stack([(cx - w / 2) * 2 * SIZE, (cy - h / 2) * SIZE,
                   (cx + w / 2) * 2 * SIZE, (cy + h / 2) * SIZE], -1)
  np.testing.assert_allclose(det["boxes"][:, 0], want, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(det["classes"][:, 0], probs[np.arange(2), best].argmax(-1))
  assert det["masks"].shape == (2, q, SIZE, 2 * SIZE)


def _toy_batch():
  boxes = np.array([[[8, 8, 40, 30], [0, 0, 0, 0]], [[20, 12, 60, 60], [4, 30, 20, 50]]],
                   np.float32)
  valid = np.array([[True, False], [True, True]])
  masks = np.zeros((2, 2, SIZE, SIZE), np.uint8)
  for b in range(2):
    for i in range(2):
      if valid[b, i]:
        x1, y1, x2, y2 = boxes[b, i].astype(int)
        masks[b, i, y1:y2, x1:x2] = 1
  images = np.asarray(jax.random.normal(jax.random.key(3), (2, SIZE, SIZE, 3)))
  return {"image": images, "boxes": boxes, "classes": np.array([[1, 0], [2, 0]], np.int32),
          "box_valid": valid, "instance_masks": masks}


def test_gradients_reach_every_part_and_a_few_steps_reduce_the_loss(model_and_variables):
  model, variables, _ = model_and_variables
  batch = _toy_batch()
  tx = optax.adam(1e-3)

  def loss_fn(params, rng):
    out = model.apply({**variables, "params": params}, batch["image"], train=True,
                      rngs={"dropout": rng})
    return detr_loss(out, batch)[0]

  @jax.jit
  def step(params, opt_state, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  params = variables["params"]
  opt_state = tx.init(params)
  losses = []
  for i in range(4):
    params, opt_state, loss, grads = step(params, opt_state, jax.random.key(i))
    losses.append(float(loss))
    if i == 0:
      for part in ("backbone", "input_proj", "transformer", "class_embed", "bbox_embed",
                   "query_embed", "bbox_attention", "mask_head"):
        norm = optax.global_norm(grads[part])
        assert np.isfinite(float(norm)) and float(norm) > 0, part
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses


def test_bad_input_raises(model_and_variables):
  model, variables, _ = model_and_variables
  with pytest.raises(ValueError, match="pad_mask"):
    model.apply(variables, jnp.zeros((2, SIZE, SIZE, 3)), jnp.zeros((2, 8, 8), bool))
  with pytest.raises(ValueError, match="feature_level"):
    model.clone(feature_level="c2").apply(variables, jnp.zeros((2, SIZE, SIZE, 3)))



def test_anchor_queries_predict_centres_relative_to_their_points():
  """With a zero box head every box is centred on its query's reference point."""
  fields = dict(TINY, with_masks=False, query_type="anchor", spatial_prior=True)
  model = get_model("detr", **fields)
  images = jax.random.normal(jax.random.key(3), (1, SIZE, SIZE, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  params = jax.tree.map(np.asarray, variables["params"])
  last = params["bbox_embed"]["layers_2"]
  last["kernel"], last["bias"] = np.zeros_like(last["kernel"]), np.zeros_like(last["bias"])
  out = jax.jit(model.apply)({**variables, "params": params}, images)
  points = 1 / (1 + np.exp(-params["query_reference"]))
  np.testing.assert_allclose(out["pred_boxes"][0, :, :2], points, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["aux_boxes"][0, 0, :, 2:], 0.5, atol=1e-6)  # sigmoid(0)
  assert np.all((points > 0.05) & (points < 0.95))
  assert params["query_log_sigma"].shape == (TINY["num_queries"], TINY["num_heads"])


def test_spatial_prior_is_a_log_gaussian_per_query_and_head():
  from seg_jax.models.detr import _gaussian_prior

  class Holder(nn.Module):
    num_heads: int = 2

    @nn.compact
    def __call__(self, points):
      return _gaussian_prior(self, points, jnp.zeros((1, 3, 4), bool))

  points = jnp.array([[0.1, 0.9], [0.5, 0.5]], jnp.float32)
  holder = Holder()
  variables = holder.init(jax.random.key(0), points)
  sigma = np.array([[0.2, 0.3], [0.4, 0.5]], np.float32)
  variables = {"params": {"query_log_sigma": np.log(sigma)}}
  bias = np.asarray(holder.apply(variables, points))
  assert bias.shape == (1, 2, 2, 12)  # (1, heads, queries, h * w)
  for head in range(2):
    for q in range(2):
      for i in range(3):
        for j in range(4):
          d2 = ((j + 0.5) / 4 - points[q, 0]) ** 2 + ((i + 0.5) / 3 - points[q, 1]) ** 2
          want = -d2 / (2 * sigma[q, head] ** 2)
          np.testing.assert_allclose(bias[0, head, q, i * 4 + j], want, rtol=1e-5)
  # Initial width: one token of the feature map.
  init_sigma = np.exp(np.asarray(holder.init(jax.random.key(0), points)["params"]
                                 ["query_log_sigma"]))
  np.testing.assert_allclose(init_sigma, 1 / 3, rtol=1e-6)


@pytest.mark.parametrize("fields,message", [
    (dict(spatial_prior=True), "spatial_prior=True needs query_type='anchor'"),
    (dict(query_type="grid"), "query_type must be 'learned' or 'anchor'")])
def test_query_options_are_checked(fields, message):
  model = get_model("detr", **dict(TINY, **fields))
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))


def test_transformer_cross_bias_reaches_every_decoder_layer():
  """A -1e9 bias on all keys but the first makes the decoder blind to the other tokens."""
  from seg_jax.models.transformer import Transformer
  model = Transformer(d_model=8, num_heads=2, num_encoder_layers=0, num_decoder_layers=2,
                      dim_feedforward=16, dropout=0.0)
  rng = np.random.default_rng(0)
  src = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
  pos = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
  queries = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  bias = jnp.full((1, 1, 3, 5), -1e9).at[..., 0].set(0.0)
  variables = model.init(jax.random.key(0), src, pos, queries)
  changed = src.at[:, 1:].add(5.0)
  hs, _ = model.apply(variables, src, pos, queries, cross_bias=bias)
  hs_changed, _ = model.apply(variables, changed, pos, queries, cross_bias=bias)
  np.testing.assert_allclose(hs, hs_changed, atol=1e-5)
  free, _ = model.apply(variables, src, pos, queries)
  free_changed, _ = model.apply(variables, changed, pos, queries)
  assert float(jnp.abs(free - free_changed).max()) > 1e-2  # without the bias they matter
