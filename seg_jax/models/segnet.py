"""SegNet (Badrinarayanan, Kendall & Cipolla 2015): encoder-decoder with pooling indices.

Encoder: the VGG-16 convolutions with BatchNorm (13 conv+BN+ReLU, no fully connected
layers), each 2x2 max-pool also returning its argmax. Decoder: the mirror image; stage
``s`` first max-unpools with the indices of encoder pool ``s`` (to the exact pre-pool size,
so odd sizes survive the floor pooling), then densifies the sparse map with conv+BN+ReLU.
A final 3x3 convolution gives the class scores. Only indices are transferred, not
feature maps, which is SegNet's memory saving compared with U-Net.

``num_stages`` < 5 drops the deepest stages (for small images). With the 'intermediates'
collection mutable, every stage sows ``pool{s}_input``, ``pool{s}_indices``,
``unpool{s}_input`` and ``unpool{s}_output`` so tests can check the index routing.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from seg_jax.layers import Conv, conv_bn_relu, scale_channels
from seg_jax.models.vgg import (STAGE_CHANNELS, STAGE_LAYERS,
                                unpool_with_encoder_indices, vgg_features)

Dtype = Any


class SegNet(nn.Module):
  """``(N, H, W, 3)`` -> logits ``(N, H, W, num_classes)`` for any ``H, W >= 2**num_stages``."""
  num_classes: int = 21
  width: float = 1.0
  num_stages: int = 5
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"SegNet expects images (N, H, W, C), got shape {x.shape}")
    min_size = 2 ** self.num_stages
    if min(x.shape[1:3]) < min_size:
      raise ValueError(f"SegNet with {self.num_stages} stages needs H, W >= {min_size}, "
                       f"got {x.shape[1]}x{x.shape[2]}")
    layers = STAGE_LAYERS[16]
    taps = vgg_features(x, depth=16, width=self.width, num_stages=self.num_stages,
                        batch_norm=True, train=train, bn_axis_name=self.bn_axis_name,
                        dtype=self.dtype, with_argmax=True)
    bn = dict(batch_norm=True, train=train, bn_axis_name=self.bn_axis_name, dtype=self.dtype)
    y = taps[f"pool{self.num_stages}"]
    for stage in range(self.num_stages, 0, -1):
      y = unpool_with_encoder_indices(self, y, taps, stage)
      channels = scale_channels(STAGE_CHANNELS[stage - 1], self.width)
      out_channels = scale_channels(STAGE_CHANNELS[max(stage - 2, 0)], self.width)
      for i in range(layers[stage - 1], 0, -1):
        if stage == 1 and i == 1:
          break  # the classifier replaces the last decoder convolution
        features = out_channels if i == 1 else channels
        _, y = conv_bn_relu(y, features, f"conv{stage}_{i}_D", **bn)
    return Conv(self.num_classes, 3, dtype=self.dtype, name="score")(y)
