"""DETR (Carion et al. 2020): set prediction of boxes with a transformer, plus its mask head.

A ResNet's C5 features (``feature_level``: C4 or C3 keep more tokens on tiny images) are
projected to ``d_model`` channels, flattened to tokens with a 2-D
sine positional encoding and encoded; ``num_queries`` learned query embeddings are decoded
against the memory. Every decoder layer's output goes through the class head
(``num_classes + 1`` logits, the last meaning "no object") and a 3-layer MLP box head
(sigmoid cxcywh, normalised to the image); all but the last layer feed the auxiliary losses.

``query_type='anchor'`` replaces the free query embeddings by learned reference points, as
in Anchor DETR / DAB-DETR: each query owns a point ``(x, y)`` in the image, its positional
query is an MLP of the point's sine encoding (the same frequencies as the memory's
positions, so queries and keys share one coordinate system), and its box centre is
predicted as an offset from the point in logit space. Everything else (matching, losses,
heads) is unchanged. ``spatial_prior=True`` (with anchors) adds SMCA's log-Gaussian around
each query's point to the cross-attention logits (Gao et al. 2021), so every query starts
out reading the features near its point.

With ``with_masks=True`` (DETR's panoptic/segmentation head) each query's final embedding
attends over the encoder memory (:class:`MHAttentionMap`); those attention maps, stacked with
the projected features, are decoded FPN-style with C4/C3/C2 skips
(:class:`MaskHeadSmallConv`) into one mask logit map per query at stride 4.

Outputs (dict): ``pred_logits (B,Q,K+1)``, ``pred_boxes (B,Q,4)``, ``aux_logits (L-1,B,Q,K+1)``,
``aux_boxes (L-1,B,Q,4)`` and, with masks, ``pred_masks (B,Q,H/4,W/4)`` logits.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.layers import Conv
from seg_jax.models.resnet import ResNet
from seg_jax.models.transformer import Transformer, sine_encode, sine_position_encoding
from seg_jax.ops.boxes import box_cxcywh_to_xyxy


def nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
  """PyTorch's ``interpolate(mode='nearest')`` source rows for ``out_size`` outputs: the same
  size is the identity, exact 2x upsampling ``i // 2``, otherwise
  ``min(floor(i * float32(in / out)), in - 1)`` in float32, as its CPU/CUDA kernels compute."""
  i = np.arange(out_size)
  if out_size == in_size:
    return i
  if out_size == 2 * in_size:
    return i // 2
  scale = np.float32(in_size) / np.float32(out_size)
  source = np.floor(i.astype(np.float32) * scale).astype(np.int64)
  return np.minimum(source, in_size - 1)


def _resize_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
  """PyTorch ``interpolate(mode='nearest')`` on NHWC/NHW (DETR resizes its padding mask to
  each feature map and upsamples in the mask head this way)."""
  rows = nearest_source_indices(x.shape[1], height)
  cols = nearest_source_indices(x.shape[2], width)
  return x[:, rows][:, :, cols]


def _uniform_logits(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Logits of reference points drawn uniformly inside the image (away from the border)."""
  points = jax.random.uniform(key, shape, dtype, minval=0.05, maxval=0.95)
  return jnp.log(points) - jnp.log1p(-points)


def _gaussian_prior(module: nn.Module, points: jax.Array, pad_mask: jax.Array) -> jax.Array:
  """SMCA-style log-Gaussian attention bias around each query's point: ``(B, heads, Q, h*w)``.

  ``-|token - point|^2 / (2 sigma^2)`` in image-normalised coordinates, with a learned width
  per query and head (initially one token). Token centres are ``(j + 0.5) / w`` counted over
  the non-padded tokens of the ``(B, h, w)`` ``pad_mask``, like the sine positions, so the
  prior lives in the same content-relative frame as the points and the boxes.
  """
  num_queries = points.shape[0]
  height = pad_mask.shape[1]
  log_sigma = module.param("query_log_sigma", nn.initializers.constant(math.log(1 / height)),
                           (num_queries, module.num_heads))
  not_mask = (~pad_mask).astype(jnp.float32)
  rows, cols = jnp.cumsum(not_mask, axis=1), jnp.cumsum(not_mask, axis=2)
  # the max keeps all-padding rows/columns finite (NaN there would poison the gradients)
  ys = ((rows - 0.5) / jnp.maximum(rows[:, -1:, :], 1)).reshape(pad_mask.shape[0], 1, -1)
  xs = ((cols - 0.5) / jnp.maximum(cols[:, :, -1:], 1)).reshape(pad_mask.shape[0], 1, -1)
  dist2 = (xs - points[None, :, 0, None]) ** 2 + (ys - points[None, :, 1, None]) ** 2
  bias = -dist2[:, None] / (2 * jnp.exp(2 * log_sigma).T[None, :, :, None])
  return bias  # (B, heads, Q, L)


def _group_norm(channels: int, name: str) -> nn.GroupNorm:
  # DETR uses 8 groups; narrow test-size heads may have fewer channels than that.
  return nn.GroupNorm(num_groups=math.gcd(8, channels), epsilon=1e-5, name=name)


class MLP(nn.Module):
  """``num_layers`` Dense layers with ReLU in between."""
  hidden_dim: int
  output_dim: int
  num_layers: int = 3

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers - 1):
      x = nn.relu(nn.Dense(self.hidden_dim, name=f"layers_{i}")(x))
    return nn.Dense(self.output_dim, name=f"layers_{self.num_layers - 1}")(x)


class MHAttentionMap(nn.Module):
  """Attention weights (no values) of queries ``(B,Q,D)`` over a feature map ``(B,H,W,D)``.

  Returns ``(B, Q, heads, H, W)``; the softmax runs jointly over heads and positions as in
  DETR, and padded positions get zero weight.
  """
  hidden_dim: int
  num_heads: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, q, k, pad_mask=None, train: bool = False):
    q = nn.Dense(self.hidden_dim, kernel_init=nn.initializers.xavier_uniform(), name="q")(q)
    k = nn.Dense(self.hidden_dim, kernel_init=nn.initializers.xavier_uniform(), name="k")(k)
    b, h, w, _ = k.shape
    head_dim = self.hidden_dim // self.num_heads
    q = q.reshape(q.shape[:2] + (self.num_heads, head_dim)) * head_dim ** -0.5
    k = k.reshape((b, h, w, self.num_heads, head_dim))
    logits = jnp.einsum("bqnc,bhwnc->bqnhw", q, k)
    if pad_mask is not None:
      logits = jnp.where(pad_mask[:, None, None], -jnp.inf, logits)
    weights = jax.nn.softmax(logits.reshape(logits.shape[:2] + (-1,)), axis=-1)
    weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
    return weights.reshape(logits.shape)


class MaskHeadSmallConv(nn.Module):
  """FPN-style conv decoder: per-query ``(features ++ attention maps)`` -> mask logits.

  Widths follow DETR: ``dim, ctx/2, ctx/4, ctx/8, ctx/16`` with GroupNorm + ReLU after each
  3x3 conv, and 1x1 adapters adding the finer skips (C4, C3, C2 below C5) after nearest
  upsampling.
  """
  context_dim: int

  @nn.compact
  def __call__(self, features, attention, skips):
    """features ``(B,h,w,D)``, attention ``(B,Q,N,h,w)``, skips [c4, c3, c2] -> ``(B,Q,H4,W4)``."""
    b, q, heads, h, w = attention.shape
    dim = features.shape[-1] + heads
    widths = [dim] + [max(1, self.context_dim // 2 ** i) for i in (1, 2, 3, 4)]
    feats = jnp.broadcast_to(features[:, None], (b, q) + features.shape[1:])
    x = jnp.concatenate([feats, jnp.moveaxis(attention, 2, -1)], axis=-1)
    x = x.reshape((b * q, h, w, dim))

    def conv_gn_relu(x, width, name):
      x = Conv(width, 3, padding=1, name=f"lay{name}")(x)
      return nn.relu(_group_norm(width, f"gn{name}")(x))

    x = conv_gn_relu(x, widths[0], 1)
    x = conv_gn_relu(x, widths[1], 2)
    for i, skip in enumerate(skips):
      adapted = Conv(widths[i + 1], 1, padding=0, name=f"adapter{i + 1}")(skip)
      adapted = jnp.repeat(adapted, q, axis=0)  # (B*Q, ...) in the order of x
      x = adapted + _resize_nearest(x, adapted.shape[1], adapted.shape[2])
      x = conv_gn_relu(x, widths[i + 2], i + 3)
    x = Conv(1, 3, padding=1, name="out_lay")(x)
    return x[..., 0].reshape((b, q) + x.shape[1:3])


class DETR(nn.Module):
  """DETR detector (and with ``with_masks`` its segmentation head); see the module docstring.

  ``__call__(images (B,H,W,3), pad_mask=None (B,H,W) True = padding, train=False)``: as in
  DETR, the mask is resized (nearest) to the feature map, padded tokens are excluded as keys
  of the encoder self-attention and decoder cross-attention, and positions count non-padded
  tokens only (so boxes are relative to the content, and the transformer's outputs do not
  depend on what the padded tokens hold).
  Dropout needs a ``'dropout'`` rng when ``train=True``. The backbone lives under the
  ``backbone`` scope so optimisers can give it its own learning rate.
  """
  num_classes: int = 91
  num_queries: int = 100
  d_model: int = 256
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  dim_feedforward: int = 2048
  dropout: float = 0.1
  backbone_depth: int = 50
  backbone_width: float = 1.0
  frozen_bn: bool = True
  feature_level: str = "c5"
  with_masks: bool = False
  query_type: str = "learned"
  spatial_prior: bool = False
  dtype: Optional[jnp.dtype] = None
  bn_axis_name: Optional[str] = None  # pmap axis for a trainable backbone BatchNorm

  @nn.compact
  def __call__(self, images: jax.Array, pad_mask: Optional[jax.Array] = None,
               train: bool = False) -> dict[str, jax.Array]:
    if images.ndim != 4:
      raise ValueError(f"DETR expects images (B, H, W, C), got shape {images.shape}")
    if pad_mask is not None and pad_mask.shape != images.shape[:3]:
      raise ValueError(f"DETR: pad_mask must be {images.shape[:3]}, got {pad_mask.shape}")
    if self.feature_level not in ("c3", "c4", "c5"):
      raise ValueError(f"DETR: feature_level must be c3, c4 or c5, got {self.feature_level!r}")
    feats = ResNet(self.backbone_depth, self.backbone_width, self.frozen_bn, self.dtype,
                   bn_axis_name=self.bn_axis_name,
                   name="backbone")(images, train)
    top = feats[self.feature_level]
    b, h, w, _ = top.shape
    mask = (jnp.zeros((b, h, w), bool) if pad_mask is None
            else _resize_nearest(pad_mask, h, w))
    src = Conv(self.d_model, 1, padding=0, dtype=self.dtype, name="input_proj")(top)
    pos = sine_position_encoding(mask, self.d_model // 2).astype(src.dtype)
    if self.spatial_prior and self.query_type != "anchor":
      raise ValueError("DETR: spatial_prior=True needs query_type='anchor' (reference points)")
    reference, cross_bias = None, None
    if self.query_type == "learned":
      query_pos = self.param("query_embed", nn.initializers.normal(1.0),
                             (self.num_queries, self.d_model))
    elif self.query_type == "anchor":
      reference = self.param("query_reference", _uniform_logits, (self.num_queries, 2))
      xy = jax.nn.sigmoid(reference) * (2 * math.pi)  # the scale of the normalised sine pos
      sine = jnp.concatenate([sine_encode(xy[:, 1], self.d_model // 2),
                              sine_encode(xy[:, 0], self.d_model // 2)], axis=-1)
      query_pos = MLP(self.d_model, self.d_model, 2, name="query_pos_mlp")(sine)
      if self.spatial_prior:
        cross_bias = _gaussian_prior(self, jax.nn.sigmoid(reference), mask)
    else:
      raise ValueError(f"DETR: query_type must be 'learned' or 'anchor', got "
                       f"{self.query_type!r}")
    hs, memory = Transformer(self.d_model, self.num_heads, self.num_encoder_layers,
                             self.num_decoder_layers, self.dim_feedforward, self.dropout,
                             self.dtype, name="transformer")(
                                 src.reshape(b, h * w, -1), pos.reshape(b, h * w, -1),
                                 query_pos, mask.reshape(b, h * w), train, cross_bias)
    logits = nn.Dense(self.num_classes + 1, name="class_embed")(hs).astype(jnp.float32)
    boxes = MLP(self.d_model, 4, 3, name="bbox_embed")(hs).astype(jnp.float32)
    if reference is not None:  # centres are offsets from each query's reference point
      boxes = boxes.at[..., :2].add(reference.astype(jnp.float32))
    boxes = jax.nn.sigmoid(boxes)
    out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1],
           "aux_logits": logits[:-1], "aux_boxes": boxes[:-1]}
    if self.with_masks:
      attention = MHAttentionMap(self.d_model, self.num_heads, name="bbox_attention")(
          hs[-1], memory.reshape(b, h, w, -1), mask, train)
      level = int(self.feature_level[1])
      skips = [feats[f"c{i}"] for i in range(level - 1, 1, -1)]  # finer levels, coarse first
      masks = MaskHeadSmallConv(self.d_model, name="mask_head")(src, attention, skips)
      out["pred_masks"] = masks.astype(jnp.float32)
    return out


def postprocess_detr(outputs: dict[str, jax.Array], image_size: tuple[int, int],
                     mask_threshold: float = 0.5,
                     content_sizes: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """Network outputs -> per-query detections in pixels, sorted by score (descending).

  Scores and classes are the softmax maximum over the real classes (the no-object column is
  dropped); boxes are xyxy pixels of an ``image_size = (H, W)`` image, or, with
  ``content_sizes (B, 2)`` (height, width of each image's unpadded content, top left), of
  that content: DETR's boxes are relative to the image inside its padding. With masks, also
  ``masks (B,Q,H,W)`` bool (bilinear upsampled sigmoid > ``mask_threshold``, over the whole
  ``image_size`` canvas) and ``mask_probs``. Keep the first N rows for a top-N evaluation.
  """
  height, width = image_size
  probs = jax.nn.softmax(outputs["pred_logits"], axis=-1)[..., :-1]
  scores = probs.max(-1)
  classes = probs.argmax(-1).astype(jnp.int32)
  if content_sizes is None:
    scale = jnp.array([width, height, width, height], jnp.float32)
  else:
    sizes = jnp.asarray(content_sizes, jnp.float32)
    scale = jnp.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], -1)[:, None]
  boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"]) * scale
  order = jnp.argsort(-scores, axis=-1)
  take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)
  result = {"scores": take(scores), "classes": take(classes), "boxes": take(boxes)}
  if "pred_masks" in outputs:
    logits = take(outputs["pred_masks"])
    probs_m = jax.nn.sigmoid(jax.image.resize(
        logits, logits.shape[:2] + (height, width), "bilinear"))
    result["mask_probs"] = probs_m
    result["masks"] = probs_m > mask_threshold
  return result
