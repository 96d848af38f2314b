"""DETR's transformer: sine positional encoding, post-norm encoder and decoder.

Follows Carion et al. 2020 (the reference implementation's defaults): positional encodings
are added to queries and keys of every attention (never to values), layers are post-norm
(``x = norm(x + dropout(sublayer(x)))``), the encoder has no final norm and the decoder
returns every layer's output passed through one shared final LayerNorm (for the auxiliary
losses). Sequences are ``(B, L, D)``; key padding masks are ``(B, L)`` with True = padding.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

_XAVIER = nn.initializers.xavier_uniform()


def sine_position_encoding(pad_mask: jax.Array, num_features: int,
                           temperature: float = 10000.0, normalize: bool = True,
                           scale: float = 2 * math.pi) -> jax.Array:
  """DETR's ``PositionEmbeddingSine``: ``(B, H, W)`` padding mask -> ``(B, H, W, 2 * F)``.

  Coordinates are cumulative counts of non-padded pixels (so padding does not shift the
  encoding of real pixels), optionally normalised to ``[0, scale]``; each coordinate is
  encoded with ``F`` interleaved sin/cos features; the y features come first.
  """
  if pad_mask.ndim != 3:
    raise ValueError(f"sine_position_encoding: pad_mask must be (B, H, W), got {pad_mask.shape}")
  not_mask = (~pad_mask).astype(jnp.float32)
  y = jnp.cumsum(not_mask, axis=1)
  x = jnp.cumsum(not_mask, axis=2)
  if normalize:
    eps = 1e-6
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
  return jnp.concatenate([sine_encode(y, num_features, temperature),
                          sine_encode(x, num_features, temperature)], axis=-1)


def sine_encode(coord: jax.Array, num_features: int,
                temperature: float = 10000.0) -> jax.Array:
  """``(...)`` coordinates -> ``(..., F)`` interleaved sin/cos features at DETR's frequencies."""
  dim_t = jnp.arange(num_features, dtype=jnp.float32)
  dim_t = temperature ** (2 * (dim_t // 2) / num_features)
  angles = coord[..., None] / dim_t
  return jnp.stack([jnp.sin(angles[..., 0::2]), jnp.cos(angles[..., 1::2])],
                   axis=-1).reshape(angles.shape)


def _attention_mask(key_padding_mask: Optional[jax.Array]) -> Optional[jax.Array]:
  """(B, Lk) True = padding  ->  (B, 1, 1, Lk) True = attend (flax convention)."""
  if key_padding_mask is None:
    return None
  return ~key_padding_mask[:, None, None, :]


class _Attention(nn.Module):
  """Multi-head attention with PyTorch-like init (xavier projections, zero biases)."""
  d_model: int
  num_heads: int
  dropout: float
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, q, k, v, key_padding_mask, deterministic: bool, bias=None):
    """``bias`` (broadcastable to ``(B, heads, Lq, Lk)``) is added to the attention logits."""
    attention_fn = (nn.dot_product_attention if bias is None
                    else functools.partial(nn.dot_product_attention, bias=bias))
    return nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.d_model, out_features=self.d_model,
        dropout_rate=self.dropout, kernel_init=_XAVIER, dtype=self.dtype,
        attention_fn=attention_fn, deterministic=deterministic)(
            q, k, v, mask=_attention_mask(key_padding_mask))


class _FeedForward(nn.Module):
  d_model: int
  dim_feedforward: int
  dropout: float
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x, deterministic: bool):
    y = nn.relu(nn.Dense(self.dim_feedforward, kernel_init=_XAVIER, dtype=self.dtype)(x))
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    return nn.Dense(self.d_model, kernel_init=_XAVIER, dtype=self.dtype)(y)


class EncoderLayer(nn.Module):
  d_model: int = 256
  num_heads: int = 8
  dim_feedforward: int = 2048
  dropout: float = 0.1
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, src, pos, pad_mask, deterministic: bool = True):
    drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)
    q = src + pos
    attn = _Attention(self.d_model, self.num_heads, self.dropout, self.dtype, name="self_attn")
    src = nn.LayerNorm(name="norm1")(src + drop(attn(q, q, src, pad_mask, deterministic)))
    ffn = _FeedForward(self.d_model, self.dim_feedforward, self.dropout, self.dtype, name="ffn")
    return nn.LayerNorm(name="norm2")(src + drop(ffn(src, deterministic)))


class DecoderLayer(nn.Module):
  d_model: int = 256
  num_heads: int = 8
  dim_feedforward: int = 2048
  dropout: float = 0.1
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, tgt, memory, pos, query_pos, pad_mask, deterministic: bool = True,
               cross_bias=None):
    drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)
    attn = lambda name: _Attention(self.d_model, self.num_heads, self.dropout, self.dtype,
                                   name=name)
    q = tgt + query_pos
    tgt = nn.LayerNorm(name="norm1")(
        tgt + drop(attn("self_attn")(q, q, tgt, None, deterministic)))
    cross = attn("cross_attn")(tgt + query_pos, memory + pos, memory, pad_mask, deterministic,
                               cross_bias)
    tgt = nn.LayerNorm(name="norm2")(tgt + drop(cross))
    ffn = _FeedForward(self.d_model, self.dim_feedforward, self.dropout, self.dtype, name="ffn")
    return nn.LayerNorm(name="norm3")(tgt + drop(ffn(tgt, deterministic)))


class Transformer(nn.Module):
  """Encoder over image tokens + decoder over object queries.

  ``__call__(src (B,L,D), pos (B,L,D), query_pos (Q,D), pad_mask (B,L) or None)`` returns
  ``(hs (num_decoder_layers, B, Q, D), memory (B, L, D))``; ``hs[i]`` is layer ``i``'s output
  after the shared final decoder LayerNorm. ``cross_bias`` (broadcastable to
  ``(B, heads, Q, L)``) is added to every decoder layer's cross-attention logits.
  """
  d_model: int = 256
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  dim_feedforward: int = 2048
  dropout: float = 0.1
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, src, pos, query_pos, pad_mask=None, train: bool = False,
               cross_bias=None):
    if src.ndim != 3 or src.shape[-1] != self.d_model or pos.shape != src.shape:
      raise ValueError(f"Transformer: src/pos must be (B, L, {self.d_model}); got {src.shape} "
                       f"and {pos.shape}")
    deterministic = not train
    kw = dict(d_model=self.d_model, num_heads=self.num_heads,
              dim_feedforward=self.dim_feedforward, dropout=self.dropout, dtype=self.dtype)
    memory = src
    for i in range(self.num_encoder_layers):
      memory = EncoderLayer(**kw, name=f"encoder_{i}")(memory, pos, pad_mask, deterministic)
    query_pos = jnp.broadcast_to(query_pos[None], (src.shape[0],) + query_pos.shape)
    tgt = jnp.zeros_like(query_pos)
    final_norm = nn.LayerNorm(name="decoder_norm")
    outputs = []
    for i in range(self.num_decoder_layers):
      tgt = DecoderLayer(**kw, name=f"decoder_{i}")(tgt, memory, pos, query_pos, pad_mask,
                                                    deterministic, cross_bias)
      outputs.append(final_norm(tgt))
    return jnp.stack(outputs), memory
