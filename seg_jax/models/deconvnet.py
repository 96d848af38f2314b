"""DeconvNet (Noh, Hong & Han 2015): VGG-16 encoder + mirrored deconvolution network.

Encoder: VGG-16 convolutions with BatchNorm, 2x2 max-pools that keep their argmax, then
fc6 (7x7 conv, 4096) and fc7 (1x1, 4096), each + BN + ReLU. Decoder: ``deconv_fc6`` (7x7
transposed convolution back to pool5's size, 512 channels), then for each stage, deepest
first, max-unpooling with the indices of the mirrored encoder pool followed by 3x3 stride-1
transposed convolutions + BN + ReLU; a 1x1 convolution scores the classes.

``fc_padding``: 'VALID' is the paper (fc6 turns a 7x7 pool5 — a 224x224 input — into 1x1,
and ``deconv_fc6`` grows it back; needs inputs >= 224). 'SAME' (default) pads fc6 and
crops ``deconv_fc6`` by 3 so every input size >= 32 works, which is what small images and
tests need. Either way the output has the input's size (odd sizes included: unpooling
restores the exact pre-pool size). ``fc6_size`` (default 7) is the fc6 / ``deconv_fc6``
kernel: the pool5 grid the classifier's fc6 was trained on, e.g. 4 for a classifier of
128 px images, whose fc6 then goes in exactly (its adaptive pool folded in,
:func:`seg_jax.models.vgg.convolutionalize`); with 'VALID' a 128 px input has a 4x4 pool5,
fc6 makes it 1x1 and ``deconv_fc6`` grows it back — the paper's structure at 128 px.
'SAME' needs an odd ``fc6_size`` (a transposed convolution keeps the size only then).

With the 'intermediates' collection mutable, each stage sows ``pool{s}_input``,
``pool{s}_indices``, ``unpool{s}_input`` and ``unpool{s}_output``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from seg_jax.layers import Conv, conv_bn_relu, scale_channels
from seg_jax.models.vgg import (FC_FEATURES, STAGE_CHANNELS, STAGE_LAYERS,
                                unpool_with_encoder_indices, vgg_features)

Dtype = Any


class DeconvNet(nn.Module):
  """``(N, H, W, 3)`` -> logits ``(N, H, W, num_classes)``."""
  num_classes: int = 21
  width: float = 1.0
  fc_padding: str = "SAME"
  fc6_size: int = 7
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.fc_padding not in ("SAME", "VALID"):
      raise ValueError(f"fc_padding must be 'SAME' or 'VALID', got {self.fc_padding!r}")
    if x.ndim != 4:
      raise ValueError(f"DeconvNet expects images (N, H, W, C), got shape {x.shape}")
    if min(x.shape[1:3]) < 32:
      raise ValueError(f"DeconvNet needs H, W >= 32 (five 2x2 pools), got "
                       f"{x.shape[1]}x{x.shape[2]}")
    layers = STAGE_LAYERS[16]
    bn = dict(batch_norm=True, train=train, bn_axis_name=self.bn_axis_name, dtype=self.dtype)
    taps = vgg_features(x, depth=16, width=self.width, with_argmax=True, **bn)
    k = self.fc6_size
    if not (isinstance(k, int) and k >= 1) or (self.fc_padding == "SAME" and k % 2 == 0):
      raise ValueError(f"DeconvNet fc6_size must be a positive integer, odd with "
                       f"fc_padding='SAME', got {k!r}")
    y = taps["pool5"]
    if self.fc_padding == "VALID" and min(y.shape[1:3]) < k:
      raise ValueError(f"fc_padding='VALID' needs pool5 >= {k}x{k} (inputs >= {32 * k}), got "
                       f"{y.shape[1]}x{y.shape[2]}; use fc_padding='SAME'")
    hidden = scale_channels(FC_FEATURES, self.width)
    _, y = conv_bn_relu(y, hidden, "fc6", kernel_size=k, padding=self.fc_padding, **bn)
    _, y = conv_bn_relu(y, hidden, "fc7", kernel_size=1, **bn)
    # PyTorch-style transposed padding: 0 grows (p-k+1) back to p, (k-1)/2 keeps the size.
    _, y = conv_bn_relu(y, scale_channels(STAGE_CHANNELS[4], self.width), "deconv_fc6",
                        kernel_size=k, padding=0 if self.fc_padding == "VALID" else (k - 1) // 2,
                        transpose=True, **bn)
    for stage in range(5, 0, -1):
      y = unpool_with_encoder_indices(self, y, taps, stage)
      channels = scale_channels(STAGE_CHANNELS[stage - 1], self.width)
      out_channels = scale_channels(STAGE_CHANNELS[max(stage - 2, 0)], self.width)
      for i in range(layers[stage - 1], 0, -1):
        features = out_channels if i == 1 else channels
        _, y = conv_bn_relu(y, features, f"deconv{stage}_{i}", padding=1, transpose=True,
                            **bn)
    return Conv(self.num_classes, 1, dtype=self.dtype, name="score")(y)
