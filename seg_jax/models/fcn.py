"""FCN-32s/16s/8s (Long, Shelhamer & Darrell 2015) on a VGG-16 trunk.

Geometry follows the reference Caffe model exactly, which is what makes the output match
the input for *any* size (odd, tiny, non-square):

* ``conv1_1`` is padded by 100 and pools round up (Caffe ``ceil`` mode), so pool5 is at
  least 7x7 for every input and fc6 (a 7x7 'VALID' convolution, the convolutionalized
  classifier) always has an output;
* the upsampled scores are larger than the input and are cropped at the reference offsets
  (19 for 32s; score_pool4 at 5 and final 27 for 16s; score_pool3 at 9 and final 31 for
  8s). These offsets align the centre of each coarse cell's receptive field with the
  centre of the bilinear kernel, independent of the input size.

``fc6_size`` (default 7, the reference) is fc6's kernel: the pool5 grid the classifier's
dense fc6 was trained on. A classifier trained on 128 px images saw a 4x4 pool5 (stretched
to 7x7 by the adaptive pool), so its exact convolutionalisation is a 4x4 fc6
(:func:`seg_jax.models.vgg.convolutionalize`); a k x k fc6 centres each score cell
(7 - k) / 2 pool5 cells = 16 (7 - k) px earlier, and every crop offset follows
(:func:`crop_offsets`; k = 4..7).

The price is compute on the 100-pixel border (a 32x32 image runs conv1 on 230x230).
Skip scores are zero-initialised (reference), upsampling kernels start bilinear.
``freeze_upsampling`` chooses which stay fixed (``stop_gradient``): 'final' (default: the
last upsampling only), 'all' (every upsampling, as the reference Caffe/pytorch-fcn models,
whose Deconvolution layers have lr_mult 0) or 'none'. Freezing only zeroes gradients: give
frozen kernels lr 0 in the optimizer too (``optimizer.lr_multipliers``) so that weight
decay cannot shrink them.
``load_pretrained`` starts from an ImageNet VGG-16 file (torchvision or Caffe layout) and
``adapt_transferred`` from another run: a trained VGG classifier is convolutionalised
(fc6/fc7 dense -> convolutions) exactly as the ImageNet file is; a trained FCN-32s/16s
passes its trunk and score layers on to the next stage.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from seg_jax.layers import Conv, ConvTranspose, scale_channels
from seg_jax.models import vgg_weights
from seg_jax.models.vgg import FC_FEATURES, vgg_features
from seg_jax.ops.spatial import crop

Dtype = Any

FIRST_PADDING = 100
# Crop offsets of the reference Caffe FCNs (fc6 7x7).
CROP_32S = 19
CROP_POOL4 = 5
CROP_POOL3 = 9
CROP_16S = 27
CROP_8S = 31
FC6_SIZES = range(4, 8)
AT_ONCE_SCALES = (0.01, 0.0001)  # pool4, pool3 (reference voc-fcn8s-atonce)
FREEZE_UPSAMPLING = ("final", "all", "none")


def crop_offsets(fc6_size: int = 7) -> dict:
  """Crop offsets for a ``fc6_size`` x ``fc6_size`` fc6 (the reference's for 7).

  Score cell j is centred on pool5 cell j + (k - 1) / 2, so a smaller kernel moves every
  score cell (7 - k) / 2 pool5 cells earlier: the final crops grow by 16 (7 - k) px and the
  pool4 / pool3 crops (in their own cells) shrink by 7 - k and 2 (7 - k). Below 4 the
  pool3 skip would no longer fit the upsampled map.
  """
  if fc6_size not in FC6_SIZES:
    raise ValueError(f"FCN fc6_size must be one of {list(FC6_SIZES)}, got {fc6_size!r}")
  shift = 7 - fc6_size
  return {"32s": CROP_32S + 16 * shift, "pool4": CROP_POOL4 - shift, "16s": CROP_16S + 16 * shift,
          "pool3": CROP_POOL3 - 2 * shift, "8s": CROP_8S + 16 * shift}


class FCN(nn.Module):
  """Fully convolutional VGG-16: ``(N, H, W, 3)`` -> logits ``(N, H, W, num_classes)``.

  ``variant``: '32s' (one 64x64/32 upsampling), '16s' (+ pool4 skip), '8s' (+ pool3 skip).
  Dropout (fc6, fc7) needs a 'dropout' rng when ``train=True``.
  """
  num_classes: int = 21
  variant: str = "8s"
  width: float = 1.0
  dropout_rate: float = 0.5
  freeze_upsampling: str = "final"  # 'final' | 'all' | 'none'
  zero_init_scores: bool = True
  # FCN-8s "at-once" (reference fcn8s-atonce): pool4/pool3 are scaled by these fixed
  # factors before their score layers, so all skips can be trained together from VGG.
  at_once: bool = False
  fc6_size: int = 7
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.variant not in ("32s", "16s", "8s"):
      raise ValueError(f"FCN variant must be '32s', '16s' or '8s', got {self.variant!r}")
    if self.freeze_upsampling not in FREEZE_UPSAMPLING:
      raise ValueError(f"FCN freeze_upsampling must be one of {FREEZE_UPSAMPLING}, got "
                       f"{self.freeze_upsampling!r}")
    if x.ndim != 4:
      raise ValueError(f"FCN expects images (N, H, W, C), got shape {x.shape}")
    crops = crop_offsets(self.fc6_size)
    height, width = x.shape[1:3]
    nc, dtype = self.num_classes, self.dtype
    score_init = (nn.initializers.zeros_init() if self.zero_init_scores
                  else nn.initializers.lecun_normal())
    skip_init = nn.initializers.zeros_init()

    feats = vgg_features(x, depth=16, width=self.width, dtype=dtype,
                         first_padding=FIRST_PADDING, ceil_mode=True)
    hidden = scale_channels(FC_FEATURES, self.width)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    fc6 = Conv(hidden, self.fc6_size, padding="VALID", dtype=dtype, name="fc6")
    h = nn.relu(fc6(feats["pool5"]))
    h = nn.relu(Conv(hidden, 1, dtype=dtype, name="fc7")(dropout(h)))
    score = Conv(nc, 1, dtype=dtype, kernel_init=score_init, name="score_fr")(dropout(h))

    def upsample(y, factor, name, final=False):
      frozen = self.freeze_upsampling == "all" or (final and self.freeze_upsampling == "final")
      return ConvTranspose(nc, 2 * factor, factor, use_bias=False, bilinear_init=True,
                           trainable=not frozen, dtype=dtype, name=name)(y)

    if self.variant == "32s":
      up = upsample(score, 32, "upscore", final=True)
      return crop(up, crops["32s"], (height, width))

    up2 = upsample(score, 2, "upscore2")
    pool4 = feats["pool4"] * AT_ONCE_SCALES[0] if self.at_once else feats["pool4"]
    pool4 = Conv(nc, 1, dtype=dtype, kernel_init=skip_init, name="score_pool4")(pool4)
    fuse = up2 + crop(pool4, crops["pool4"], up2.shape[1:3])
    if self.variant == "16s":
      up = upsample(fuse, 16, "upscore16", final=True)
      return crop(up, crops["16s"], (height, width))

    up4 = upsample(fuse, 2, "upscore_pool4")
    pool3 = feats["pool3"] * AT_ONCE_SCALES[1] if self.at_once else feats["pool3"]
    pool3 = Conv(nc, 1, dtype=dtype, kernel_init=skip_init, name="score_pool3")(pool3)
    fuse = up4 + crop(pool3, crops["pool3"], up4.shape[1:3])
    up = upsample(fuse, 8, "upscore8", final=True)
    return crop(up, crops["8s"], (height, width))


def load_pretrained(state, variables, *, source: str, width: float = 1.0,
                    **unused_model_fields) -> dict:
  """An ImageNet VGG-16 file into FCN variables: the trunk and the convolutionalised
  fc6/fc7 (all required); score and upsampling layers keep their initialisation."""
  del unused_model_fields
  required = list(vgg_weights.vgg_feature_indices(16)) + ["fc6", "fc7"]
  return vgg_weights.load_pretrained(state, variables, source=source, width=width,
                                     required=required)


adapt_transferred = vgg_weights.adapt_transferred
