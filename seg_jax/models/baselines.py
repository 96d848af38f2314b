"""Three baselines that motivate the fully convolutional segmentation networks.

* :class:`PatchClassifier` labels a pixel by classifying the patch centred on it. Run
  naively (:func:`segment_patchwise`) it recomputes every overlapping patch; run fully
  convolutionally (:func:`segment_dense`) it shares that computation and gives the same map.
* :class:`FullResFCN` keeps full resolution everywhere: simple, exact, and expensive.
* :class:`EncoderDecoder` downsamples then upsamples inside the network; its
  ``upsampling`` field selects the upsampling primitive (the knob of the ablation sweep).

All map images (N, H, W, 3) to logits (N, H, W, num_classes).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.layers import Conv, ConvBNReLU, ConvTranspose, conv_bn_relu, scale_channels
from seg_jax.ops import unpool, upsample

Dtype = Any


def _check_images(x: jax.Array, name: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} expects images (N, H, W, C), got shape {x.shape}")


# ----------------------------------------------------------------------------------------------
# Patch classifier


class PatchClassifier(nn.Module):
  """Classifies the centre pixel of a ``patch_size`` x ``patch_size`` patch.

  The network is ``num_convs`` unpadded 3x3 conv+ReLU layers followed by a "dense" layer
  written as an unpadded conv whose kernel covers the remaining ``patch_size - 2 *
  num_convs`` extent, then a 1x1 classifier. With only valid convolutions and no striding,
  sliding the network over a padded image (``dense_logits``) computes exactly what
  classifying every patch separately (``classify_patches``) computes. ``__call__`` is the
  dense evaluation after reflect padding by ``patch_size // 2`` (output = input size; H
  and W must exceed ``patch_size // 2`` for reflection).
  """
  num_classes: int
  width: float = 1.0
  patch_size: int = 15
  num_convs: int = 3
  features: int = 32
  hidden: int = 128
  use_batch_norm: bool = False
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  def setup(self):
    if self.patch_size < 1 or self.patch_size % 2 == 0:
      raise ValueError(f"patch_size must be a positive odd int, got {self.patch_size}")
    dense_size = self.patch_size - 2 * self.num_convs
    if dense_size < 1:
      raise ValueError(f"patch_size {self.patch_size} too small for {self.num_convs} 3x3 convs")
    self.convs = [
        ConvBNReLU(scale_channels(self.features * 2**min(i, 1), self.width), 3, padding="VALID",
                   use_batch_norm=self.use_batch_norm, bn_axis_name=self.bn_axis_name,
                   dtype=self.dtype)
        for i in range(self.num_convs)]
    self.dense = Conv(scale_channels(self.hidden, self.width), dense_size, padding="VALID",
                      dtype=self.dtype)
    self.classifier = Conv(self.num_classes, 1, dtype=self.dtype)

  def dense_logits(self, padded: jax.Array, train: bool = False) -> jax.Array:
    """(N, H + P - 1, W + P - 1, 3) -> (N, H, W, C): every P x P window classified at once."""
    _check_images(padded, "PatchClassifier")
    x = padded
    for conv in self.convs:
      x = conv(x, train)
    return self.classifier(nn.relu(self.dense(x)))

  def classify_patches(self, patches: jax.Array, train: bool = False) -> jax.Array:
    """(B, P, P, 3) patches -> (B, C) logits of their centre pixels."""
    if patches.ndim != 4 or patches.shape[1:3] != (self.patch_size, self.patch_size):
      raise ValueError(f"classify_patches expects (B, {self.patch_size}, {self.patch_size}, C) "
                       f"patches, got {patches.shape}")
    return self.dense_logits(patches, train)[:, 0, 0, :]

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_images(x, "PatchClassifier")
    r = self.patch_size // 2
    if min(x.shape[1:3]) <= r:
      raise ValueError(f"PatchClassifier needs H and W > {r} for reflect padding, got {x.shape}")
    return self.dense_logits(jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect"), train)


def _reflect_pad_image(image: np.ndarray, radius: int) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"expected one image (H, W, C), got shape {image.shape}")
  if min(image.shape[:2]) <= radius:
    raise ValueError(f"image {image.shape[:2]} too small to reflect-pad by {radius}")
  return np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")


@functools.partial(jax.jit, static_argnums=0)
def _classify_windows(model: PatchClassifier, variables, padded, rows, cols):
  p = model.patch_size
  cut = lambda r, c: jax.lax.dynamic_slice(padded, (r, c, 0), (p, p, padded.shape[-1]))
  return model.apply(variables, jax.vmap(cut)(rows, cols), method=PatchClassifier.classify_patches)


@functools.partial(jax.jit, static_argnums=0)
def _dense_logits(model: PatchClassifier, variables, padded):
  return model.apply(variables, padded, method=PatchClassifier.dense_logits)


def segment_patchwise(model: PatchClassifier, variables, image: np.ndarray, *,
                      batch_size: int = 1024) -> np.ndarray:
  """Naive segmentation: classify the patch around every pixel, ``batch_size`` at a time.

  The image (H, W, 3) is mirror-padded by ``patch_size // 2``; patches are cut on device
  from pixel indices, so one jitted function serves every batch (the last is padded).
  Returns (H, W, num_classes) logits.
  """
  padded = jnp.asarray(_reflect_pad_image(image, model.patch_size // 2))
  height, width = image.shape[:2]
  num = height * width
  rows_all, cols_all = np.divmod(np.arange(num, dtype=np.int32), width)
  out = np.empty((num, model.num_classes), np.float32)
  for start in range(0, num, batch_size):
    stop = min(start + batch_size, num)
    rows = np.zeros(batch_size, np.int32)
    cols = np.zeros(batch_size, np.int32)
    rows[:stop - start] = rows_all[start:stop]
    cols[:stop - start] = cols_all[start:stop]
    out[start:stop] = np.asarray(_classify_windows(model, variables, padded, rows, cols))[
        :stop - start]
  return out.reshape(height, width, model.num_classes)


def segment_dense(model: PatchClassifier, variables, image: np.ndarray) -> np.ndarray:
  """Shared computation: the network slides over the mirror-padded image in one pass."""
  padded = _reflect_pad_image(image, model.patch_size // 2)
  return np.asarray(_dense_logits(model, variables, padded[None]))[0]


# ----------------------------------------------------------------------------------------------
# Full-resolution FCN


class FullResFCN(nn.Module):
  """A stack of same-padded 3x3 conv+BN+ReLU layers at full resolution, then a 1x1 classifier.

  ``dilation`` is one int for every layer or one per layer; the receptive field is
  ``1 + 2 * sum(dilations)`` (see :meth:`receptive_field`). Output = input size, any size.
  """
  num_classes: int
  width: float = 1.0
  features: int = 64
  num_layers: int = 6
  dilation: Union[int, Sequence[int]] = 1
  use_batch_norm: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  def dilations(self) -> tuple[int, ...]:
    if isinstance(self.dilation, int):
      return (self.dilation,) * self.num_layers
    dilations = tuple(int(d) for d in self.dilation)
    if len(dilations) != self.num_layers:
      raise ValueError(f"FullResFCN got {len(dilations)} dilations for {self.num_layers} layers")
    return dilations

  def receptive_field(self) -> int:
    return 1 + 2 * sum(self.dilations())

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_images(x, "FullResFCN")
    features = scale_channels(self.features, self.width)
    for i, d in enumerate(self.dilations()):
      _, x = conv_bn_relu(x, features, f"conv{i}", bn_name=f"bn{i}", padding=d, dilation=d,
                          batch_norm=self.use_batch_norm, train=train,
                          bn_axis_name=self.bn_axis_name, dtype=self.dtype)
    return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)


# ----------------------------------------------------------------------------------------------
# Encoder-decoder

UPSAMPLINGS = ("nearest", "bed_of_nails", "max_unpool", "transposed", "bilinear")


class EncoderDecoder(nn.Module):
  """Downsample ``num_stages`` times by 2x2 max pooling, then upsample back symmetrically.

  Stage ``s`` has ``base_features * 2**s * width`` channels and ``convs_per_stage``
  conv+BN+ReLU blocks on each side. ``upsampling`` picks how the decoder doubles the
  resolution: 'nearest' (copy), 'bed_of_nails' (value at top-left, zeros elsewhere),
  'max_unpool' (value back at the encoder's argmax position, SegNet-style), 'transposed'
  (learned 4x4 stride-2 transposed conv, bilinear init) or 'bilinear' (fixed resize).
  Output = input size; H and W must be divisible by ``2**num_stages``.
  """
  num_classes: int
  width: float = 1.0
  num_stages: int = 3
  base_features: int = 32
  convs_per_stage: int = 2
  upsampling: str = "max_unpool"
  use_batch_norm: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  def _features(self, stage: int) -> int:
    return scale_channels(self.base_features * 2**stage, self.width)

  def _upsample(self, x, indices, size, stage):
    if self.upsampling == "nearest":
      return unpool.unpool_nearest(x, 2)
    if self.upsampling == "bed_of_nails":
      return unpool.unpool_bed_of_nails(x, 2)
    if self.upsampling == "max_unpool":
      return unpool.max_unpool(x, indices, output_size=size)
    if self.upsampling == "bilinear":
      return upsample.resize_bilinear(x, size)
    return ConvTranspose(x.shape[-1], kernel_size=4, strides=2, padding=1, bilinear_init=True,
                         dtype=self.dtype, name=f"up{stage}_transposed")(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_images(x, "EncoderDecoder")
    if self.upsampling not in UPSAMPLINGS:
      raise ValueError(f"EncoderDecoder upsampling must be one of {UPSAMPLINGS}, "
                       f"got {self.upsampling!r}")
    if self.num_stages < 1:
      raise ValueError(f"EncoderDecoder num_stages must be >= 1, got {self.num_stages}")
    factor = 2**self.num_stages
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"EncoderDecoder with {self.num_stages} stages needs H and W divisible "
                       f"by {factor}, got {x.shape[1:3]}")

    def block(h, features, name):
      return ConvBNReLU(features, 3, use_batch_norm=self.use_batch_norm,
                        bn_axis_name=self.bn_axis_name, dtype=self.dtype, name=name)(h, train)

    pooled_from = []  # (indices or None, pre-pool size) per stage
    for s in range(self.num_stages):
      for i in range(self.convs_per_stage):
        x = block(x, self._features(s), f"down{s}_conv{i}")
      size = x.shape[1:3]
      if self.upsampling == "max_unpool":
        x, indices = unpool.max_pool_with_argmax(x, window=2, stride=2)
      else:
        x, indices = nn.max_pool(x, (2, 2), strides=(2, 2)), None
      pooled_from.append((indices, size))

    for s in reversed(range(self.num_stages)):
      indices, size = pooled_from[s]
      x = self._upsample(x, indices, size, s)
      for i in range(self.convs_per_stage):
        last = i == self.convs_per_stage - 1
        features = self._features(max(s - 1, 0) if last else s)
        x = block(x, features, f"up{s}_conv{i}")
    return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
