"""DETR's padding mask: an image padded into a larger canvas (Carion et al. 2020, NestedTensor).

What is exactly invariant: everything after the backbone (input projection, mask resize,
sine positions, encoder, decoder, heads, content-relative boxes), given the same features
for the image's tokens. The convolutional backbone itself is not: at the image's border its
convolutions see the canvas' features (non-zero after the first layer) where the unpadded
image sees zero padding, so the whole model only approximately agrees (measured below).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.models import get_model
from seg_jax.models.detr import nearest_source_indices, postprocess_detr
from seg_jax.models.resnet import ResNet
from seg_jax.models.transformer import sine_position_encoding
from seg_jax.tasks import detection
from seg_jax.training.config import base_config

TINY = dict(num_classes=3, num_queries=5, d_model=16, num_heads=2, num_encoder_layers=2,
            num_decoder_layers=2, dim_feedforward=32, backbone_depth=18, backbone_width=0.125,
            dropout=0.0)
STRIDE = 32
IMAGE = (64, 96)  # (H, W): a 2 x 3 token C5 map
CANVAS = (128, 160)  # 4 x 5 tokens
OUTPUTS = ("pred_logits", "pred_boxes", "aux_logits", "aux_boxes")

pytestmark = pytest.mark.usefixtures("fast_compile")


def detr_position_embedding_sine(mask, num_pos_feats, temperature=10000, scale=2 * math.pi):
  """numpy transcription of DETR's ``PositionEmbeddingSine(normalize=True)`` (models/
  position_encoding.py): ``(B,H,W)`` True = padding -> ``(B,H,W,2F)`` (channels last)."""
  not_mask = ~mask
  y_embed = np.cumsum(not_mask, axis=1, dtype=np.float32)
  x_embed = np.cumsum(not_mask, axis=2, dtype=np.float32)
  eps = 1e-6
  y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
  x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
  dim_t = np.arange(num_pos_feats, dtype=np.float32)
  dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
  pos_x = x_embed[..., None] / dim_t
  pos_y = y_embed[..., None] / dim_t
  interleave = lambda p: np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], -1).reshape(
      p.shape)
  return np.concatenate([interleave(pos_y), interleave(pos_x)], axis=-1)


def test_sine_encoding_of_a_padded_mask_matches_detr():
  mask = np.zeros((2, 5, 7), bool)
  mask[0, 3:, :] = True  # 3 x 4 content
  mask[0, :, 4:] = True
  mask[1, :, 6:] = True  # 5 x 6 content
  got = np.asarray(sine_position_encoding(jnp.asarray(mask), 8))
  want = detr_position_embedding_sine(mask, 8)
  np.testing.assert_allclose(got[~mask], want[~mask], rtol=1e-5, atol=1e-6)
  # and the valid positions equal those of the unpadded 3 x 4 image
  alone = np.asarray(sine_position_encoding(jnp.zeros((1, 3, 4), bool), 8))
  np.testing.assert_allclose(got[0, :3, :4], alone[0], rtol=1e-6, atol=1e-6)


def test_nearest_indices_follow_pytorch():
  # torch.nn.functional.interpolate(mode='nearest') source indices, by its float32 rule
  assert nearest_source_indices(3, 5).tolist() == [0, 0, 1, 1, 2]
  assert nearest_source_indices(5, 3).tolist() == [0, 1, 3]
  assert nearest_source_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  assert nearest_source_indices(128, 4).tolist() == [0, 32, 64, 96]
  assert nearest_source_indices(7, 7).tolist() == list(range(7))


def _features_interceptor(features):
  """Replaces the backbone's output by ``features`` (the rest of DETR runs unchanged)."""

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, ResNet) and context.method_name == "__call__":
      return features
    return next_fun(*args, **kwargs)

  return interceptor


def _pad_mask(batch):
  mask = np.ones((batch,) + CANVAS, bool)
  mask[:, :IMAGE[0], :IMAGE[1]] = False
  return jnp.asarray(mask)


@pytest.mark.parametrize("queries", [
    dict(query_type="learned"),
    dict(query_type="anchor", spatial_prior=True)])  # SMCA's prior in the content's frame
def test_everything_after_the_backbone_ignores_the_padded_tokens(queries):
  model = get_model("detr", **TINY, **queries)
  rng = np.random.default_rng(0)
  channels = ResNet(18, TINY["backbone_width"]).stage_channels()[-1]
  tokens = (IMAGE[0] // STRIDE, IMAGE[1] // STRIDE)
  c5 = rng.normal(size=(2,) + tokens + (channels,)).astype(np.float32)
  canvas = rng.normal(size=(2, CANVAS[0] // STRIDE, CANVAS[1] // STRIDE, channels)) * 10
  canvas[:, :tokens[0], :tokens[1]] = c5  # arbitrary (large) values in the padding
  image = jnp.zeros((2,) + IMAGE + (3,))
  canvas_image = jnp.zeros((2,) + CANVAS + (3,))

  def run(variables, images, features, pad_mask):
    with nn.intercept_methods(_features_interceptor({"c5": jnp.asarray(features, jnp.float32)})):
      if variables is None:
        return model.init(jax.random.key(0), images, pad_mask)
      return model.apply(variables, images, pad_mask)

  variables = run(None, image, c5, None)
  alone = run(variables, image, c5, None)
  padded = run(variables, canvas_image, canvas, _pad_mask(2))
  for key in OUTPUTS:
    np.testing.assert_allclose(padded[key], alone[key], rtol=1e-5, atol=2e-6, err_msg=key)
  unmasked = run(variables, canvas_image, canvas, None)  # what the mask protects against
  assert float(jnp.abs(unmasked["pred_boxes"] - alone["pred_boxes"]).max()) > 1e-2

  # the detection task's pixel boxes are relative to the content, so they agree too
  det_alone = postprocess_detr(alone, IMAGE)
  batch = {"image": canvas_image, "pad_mask": _pad_mask(2)}
  det_padded = postprocess_detr(padded, CANVAS,
                                          content_sizes=detection.content_sizes(batch))
  np.testing.assert_allclose(det_padded["boxes"], det_alone["boxes"], rtol=1e-5, atol=1e-3)


def test_detection_loss_and_predictions_ignore_the_padding():
  """The task normalises target boxes by each image's content, as DETR does: the same image
  and boxes give the same loss and pixel detections alone and inside a padded canvas."""
  model = get_model("detr", **TINY)
  rng = np.random.default_rng(1)
  channels = ResNet(18, TINY["backbone_width"]).stage_channels()[-1]
  tokens = (IMAGE[0] // STRIDE, IMAGE[1] // STRIDE)
  c5 = rng.normal(size=(2,) + tokens + (channels,)).astype(np.float32)
  canvas_c5 = rng.normal(size=(2, CANVAS[0] // STRIDE, CANVAS[1] // STRIDE, channels))
  canvas_c5[:, :tokens[0], :tokens[1]] = c5
  boxes = np.array([[[4, 6, 40, 50], [50, 10, 90, 60]], [[10, 10, 30, 20], [0, 0, 0, 0]]],
                   np.float32)
  targets = {"boxes": boxes, "classes": np.array([[0, 2], [1, 0]], np.int32),
             "box_valid": np.array([[True, True], [True, False]])}
  alone = dict(targets, image=jnp.zeros((2,) + IMAGE + (3,)))
  padded = dict(targets, image=jnp.zeros((2,) + CANVAS + (3,)), pad_mask=_pad_mask(2))
  config = base_config("shapes", task="detection")
  with nn.intercept_methods(_features_interceptor({"c5": jnp.asarray(c5)})):
    variables = model.init(jax.random.key(0), alone["image"])
    loss_alone, _ = detection.loss_fn(model, variables["params"], {}, alone,
                                      jax.random.key(1), config)
    det_alone = detection.predict(model, variables, alone, config)
  with nn.intercept_methods(_features_interceptor({"c5": jnp.asarray(canvas_c5, jnp.float32)})):
    loss_padded, _ = detection.loss_fn(model, variables["params"], {}, padded,
                                       jax.random.key(1), config)
    det_padded = detection.predict(model, variables, padded, config)
  np.testing.assert_allclose(loss_padded, loss_alone, rtol=1e-5)
  np.testing.assert_allclose(det_padded["boxes"], det_alone["boxes"], rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(det_padded["scores"], det_alone["scores"], rtol=1e-5)


def test_whole_model_differs_only_through_the_backbone_border():
  """The whole model on the padded canvas equals the model fed, for the image's tokens, the
  backbone features the canvas produced: all of the difference to the unpadded image comes
  from the backbone's border (see the module docstring), whose size is printed."""
  model = get_model("detr", **TINY)
  image = jax.random.normal(jax.random.key(1), (2,) + IMAGE + (3,))
  canvas = jnp.zeros((2,) + CANVAS + (3,)).at[:, :IMAGE[0], :IMAGE[1]].set(image)
  variables = model.init(jax.random.key(0), image)
  captured = {}

  def capture(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, ResNet) and context.method_name == "__call__":
      captured.update(out)
    return out

  with nn.intercept_methods(capture):
    padded = model.apply(variables, canvas, _pad_mask(2))
  tokens = (IMAGE[0] // STRIDE, IMAGE[1] // STRIDE)
  canvas_c5 = captured["c5"][:, :tokens[0], :tokens[1]]
  with nn.intercept_methods(_features_interceptor({"c5": canvas_c5})):
    fed = model.apply(variables, image)
  for key in OUTPUTS:
    np.testing.assert_allclose(padded[key], fed[key], rtol=1e-5, atol=2e-6, err_msg=key)

  alone = model.apply(variables, image)
  unmasked = model.apply(variables, canvas)
  with nn.intercept_methods(capture):
    model.apply(variables, image)
  c5_diff = float(jnp.abs(canvas_c5 - captured["c5"]).max() / jnp.abs(captured["c5"]).max())
  pixel_scale = lambda size: jnp.array([size[1], size[0]] * 2, jnp.float32)  # cxcywh pixels
  boxes = {"alone": alone["pred_boxes"] * pixel_scale(IMAGE),
           "masked": padded["pred_boxes"] * pixel_scale(IMAGE),  # content-relative boxes
           "unmasked": unmasked["pred_boxes"] * pixel_scale(CANVAS)}
  logits = {"masked": padded["pred_logits"], "unmasked": unmasked["pred_logits"]}
  box_diff = {k: float(jnp.abs(boxes[k] - boxes["alone"]).max()) for k in logits}
  print(f"\nC5 at the image's tokens: max |canvas - alone| / max |alone| = {c5_diff:.3f}")
  for name in logits:
    print(f"{name}: max |logits - alone| = "
          f"{float(jnp.abs(logits[name] - alone['pred_logits']).max()):.3f}, "
          f"max |box - alone| = {box_diff[name]:.2f} px")
  assert c5_diff > 0  # not exact: the backbone's border effect
  assert box_diff["masked"] < box_diff["unmasked"]
