"""VGG-16/19 (Simonyan & Zisserman 2014): classifier, feature taps, and the shared trunk.

The trunk is written once, in :func:`vgg_features`, and reused by FCN, SegNet and
DeconvNet. It is a plain function called from inside a parent module's ``@nn.compact``
method, so its layers become direct children of that parent: parameters live at
``params['conv1_1']['kernel']`` in every model, and VGG weights drop into any of them.

Taps, in order: ``conv{s}_{i}`` (before ReLU), ``relu{s}_{i}``, ``pool{s}``; with
``with_argmax`` also ``pool{s}_indices`` (flat ``h*W+w`` index into the pre-pool map, the
PyTorch convention, consumed by :func:`seg_jax.ops.unpool.max_unpool`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.layers import Conv, conv_bn_relu, scale_channels
from seg_jax.ops.unpool import max_pool_with_argmax, max_unpool

Dtype = Any

STAGE_LAYERS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
STAGE_CHANNELS = (64, 128, 256, 512, 512)
FC_FEATURES = 4096
TORCHVISION_POOL_SIZE = (7, 7)


def check_depth(depth: int) -> None:
  if depth not in STAGE_LAYERS:
    raise ValueError(f"VGG depth must be 16 or 19, got {depth!r}")


def vgg_tap_names(depth: int = 16, num_stages: int = 5) -> list[str]:
  """All tap names of the trunk, in computation order."""
  check_depth(depth)
  names = []
  for stage, layers in enumerate(STAGE_LAYERS[depth][:num_stages], start=1):
    for i in range(1, layers + 1):
      names += [f"conv{stage}_{i}", f"relu{stage}_{i}"]
    names.append(f"pool{stage}")
  return names


def _max_pool_ceil(x: jax.Array) -> jax.Array:
  """2x2/2 max pool rounding the output size up (Caffe), i.e. -inf padding bottom/right."""
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
  return nn.max_pool(x, (2, 2), (2, 2), padding=pad)


def vgg_features(x: jax.Array, *, depth: int = 16, width: float = 1.0, num_stages: int = 5,
                 pooling: str = "max", batch_norm: bool = False, train: bool = False,
                 bn_axis_name: Optional[str] = None, dtype: Optional[Dtype] = None,
                 first_padding: int = 1, ceil_mode: bool = False, with_argmax: bool = False,
                 stop_after: Optional[str] = None) -> dict[str, jax.Array]:
  """Runs the VGG trunk in the calling module's scope and returns ``{tap: activation}``.

  Args:
    x: ``(N, H, W, 3)`` images.
    first_padding: zero padding of ``conv1_1`` (1 = 'SAME'; the reference FCN uses 100).
    ceil_mode: round pool output sizes up like Caffe (FCN) instead of down (torchvision).
    with_argmax: pool with :func:`max_pool_with_argmax` and add ``pool{s}_indices``
      (SegNet/DeconvNet unpooling; floor mode).
    stop_after: stop after this tap (deeper layers are neither built nor run).
  """
  check_depth(depth)
  if pooling not in ("max", "avg"):
    raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
  if not 1 <= num_stages <= 5:
    raise ValueError(f"num_stages must be in 1..5, got {num_stages}")
  if x.ndim != 4:
    raise ValueError(f"VGG expects images (N, H, W, C), got shape {x.shape}")
  if stop_after is not None and stop_after not in vgg_tap_names(depth, num_stages):
    raise ValueError(f"unknown VGG{depth} tap {stop_after!r}")
  taps: dict[str, jax.Array] = {}

  def record(name: str, value: jax.Array) -> bool:
    taps[name] = value
    return name == stop_after

  for stage, layers in enumerate(STAGE_LAYERS[depth][:num_stages], start=1):
    features = scale_channels(STAGE_CHANNELS[stage - 1], width)
    for i in range(1, layers + 1):
      padding = first_padding if (stage, i) == (1, 1) else 1
      pre, x = conv_bn_relu(x, features, f"conv{stage}_{i}", batch_norm=batch_norm,
                            train=train, bn_axis_name=bn_axis_name, dtype=dtype,
                            padding=padding)
      if record(f"conv{stage}_{i}", pre) or record(f"relu{stage}_{i}", x):
        return taps
    if pooling == "avg":
      x = nn.avg_pool(x, (2, 2), (2, 2))
    elif with_argmax:
      x, indices = max_pool_with_argmax(x, window=2, stride=2)
      taps[f"pool{stage}_indices"] = indices
    elif ceil_mode:
      x = _max_pool_ceil(x)
    else:
      x = nn.max_pool(x, (2, 2), (2, 2))
    if record(f"pool{stage}", x):
      return taps
  return taps


def unpool_with_encoder_indices(module: nn.Module, y: jax.Array, taps: dict, stage: int,
                                depth: int = 16) -> jax.Array:
  """Max-unpools ``y`` with the indices of encoder pool ``stage`` (from ``vgg_features(...,
  with_argmax=True)``) back to that pool's input size, as SegNet and DeconvNet decoders do.

  Sows ``pool{s}_input``, ``pool{s}_indices``, ``unpool{s}_input`` and ``unpool{s}_output`` into
  ``module``'s 'intermediates' so tests can check each decoder uses its mirrored pool's indices.
  """
  pre_pool = taps[f"relu{stage}_{STAGE_LAYERS[depth][stage - 1]}"]
  indices = taps[f"pool{stage}_indices"]
  module.sow("intermediates", f"pool{stage}_input", pre_pool)
  module.sow("intermediates", f"pool{stage}_indices", indices)
  module.sow("intermediates", f"unpool{stage}_input", y)
  y = max_unpool(y, indices, output_size=pre_pool.shape[1:3])
  module.sow("intermediates", f"unpool{stage}_output", y)
  return y


def _adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """Averaging matrix of PyTorch's adaptive average pooling along one axis."""
  matrix = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, output_size: Sequence[int]) -> jax.Array:
  """``torch.nn.AdaptiveAvgPool2d`` for NHWC input (bins ``[floor(iH/o), ceil((i+1)H/o))``)."""
  mh = jnp.asarray(_adaptive_pool_matrix(x.shape[1], output_size[0]), x.dtype)
  mw = jnp.asarray(_adaptive_pool_matrix(x.shape[2], output_size[1]), x.dtype)
  return jnp.einsum("ih,jw,nhwc->nijc", mh, mw, x)


class VGG(nn.Module):
  """VGG-16/19 classifier or feature extractor.

  ``__call__(x, train, capture)``: with ``capture=None`` returns logits ``(N, num_classes)``
  (torchvision head: adaptive 7x7 average pool, flatten in (H, W, C) order, fc6-fc7-fc8
  with dropout), or ``pool5`` if ``include_top=False``. With ``convolutional_fc`` the head
  is the same weights as convolutions (fc6 ``fc6_size`` x ``fc6_size`` 'VALID', fc7/fc8
  1x1; see :func:`convolutionalize`) and returns a dense ``(N, h, w, num_classes)`` score
  map (needs pool5 >= fc6_size, i.e. inputs >= 224 for the default 7). With
  ``capture=[taps]`` returns ``{tap: activation}`` and stops after the deepest requested
  tap. ``batch_norm`` gives the VGG-BN trunk (conv + BN + ReLU, the trunk SegNet and
  DeconvNet use; names ``conv{s}_{i}`` and ``conv{s}_{i}_bn``).
  """
  depth: int = 16
  width: float = 1.0
  num_classes: int = 1000
  include_top: bool = True
  pooling: str = "max"
  convolutional_fc: bool = False
  fc6_size: int = 7
  dropout_rate: float = 0.5
  batch_norm: bool = False
  bn_axis_name: Optional[str] = None
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               capture: Optional[Sequence[str]] = None):
    common = dict(depth=self.depth, width=self.width, pooling=self.pooling, dtype=self.dtype,
                  batch_norm=self.batch_norm, train=train, bn_axis_name=self.bn_axis_name)
    if capture is not None:
      capture = [capture] if isinstance(capture, str) else list(capture)
      order = vgg_tap_names(self.depth)
      unknown = [t for t in capture if t not in order]
      if unknown or not capture:
        raise ValueError(f"unknown VGG{self.depth} taps {unknown}; known: {', '.join(order)}")
      deepest = max(capture, key=order.index)
      taps = vgg_features(x, stop_after=deepest, **common)
      return {t: taps[t] for t in capture}
    x = vgg_features(x, **common)["pool5"]
    if not self.include_top:
      return x
    hidden = scale_channels(FC_FEATURES, self.width)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    if self.convolutional_fc:
      k = self.fc6_size
      if x.shape[1] < k or x.shape[2] < k:
        raise ValueError(f"convolutional_fc VGG needs pool5 >= {k}x{k} (inputs >= {32 * k}), "
                         f"got pool5 {x.shape[1]}x{x.shape[2]}")
      x = dropout(nn.relu(Conv(hidden, k, padding="VALID", dtype=self.dtype, name="fc6")(x)))
      x = dropout(nn.relu(Conv(hidden, 1, dtype=self.dtype, name="fc7")(x)))
      return Conv(self.num_classes, 1, dtype=self.dtype, name="fc8")(x)
    x = adaptive_avg_pool(x, TORCHVISION_POOL_SIZE).reshape(x.shape[0], -1)
    init = nn.initializers.normal(0.01)
    x = dropout(nn.relu(nn.Dense(hidden, dtype=self.dtype, kernel_init=init, name="fc6")(x)))
    x = dropout(nn.relu(nn.Dense(hidden, dtype=self.dtype, kernel_init=init, name="fc7")(x)))
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init, name="fc8")(x)


def fold_adaptive_pool(kernel, pool5_size: Sequence[int]):
  """A ``(7, 7, C, F)`` fc6 kernel trained behind the adaptive 7x7 pool of a ``pool5_size``
  pool5 -> the ``(*pool5_size, C, F)`` kernel that computes the same fc6 on pool5 directly.

  The adaptive pool is linear (``A_h`` x ``A_w``, each bin an average of 1 or 2 cells when
  pool5 is smaller than 7), so ``K[h, w] = sum_ij A_h[i, h] A_w[j, w] W[i, j]`` exactly.
  """
  mh = _adaptive_pool_matrix(int(pool5_size[0]), TORCHVISION_POOL_SIZE[0])
  mw = _adaptive_pool_matrix(int(pool5_size[1]), TORCHVISION_POOL_SIZE[1])
  folded = np.einsum("ih,jw,ijcf->hwcf", mh.astype(np.float64), mw.astype(np.float64),
                     np.asarray(kernel, np.float64))
  return folded.astype(np.asarray(kernel).dtype)


def convolutionalize(params: dict, pool5_size: Sequence[int] = TORCHVISION_POOL_SIZE) -> dict:
  """Classifier params -> params of the same VGG with ``convolutional_fc=True``.

  "Regular CNN to FCN": fc6's ``(7*7*C, F)`` dense kernel (rows in our (H, W, C) flatten
  order) becomes a ``(7, 7, C, F)`` convolution, fc7/fc8 become 1x1 convolutions. Already
  convolutional kernels pass through. ``pool5_size``: the pool5 grid the classifier was
  trained on (inputs / 32). 7x7 (224 px, ImageNet) makes the adaptive pool the identity;
  another size folds the pool into fc6 (:func:`fold_adaptive_pool`), so the conv net
  computes exactly the classifier's fc6 on every window of the classifier's input size.
  Accepts ``variables`` or ``variables['params']``.
  """
  if "params" in params:
    return {**params, "params": convolutionalize(params["params"], pool5_size)}
  out = dict(params)
  for name, spatial in (("fc6", TORCHVISION_POOL_SIZE), ("fc7", (1, 1)), ("fc8", (1, 1))):
    if name not in params:
      continue
    kernel = params[name]["kernel"]
    if kernel.ndim == 4:
      continue
    rows, cols = kernel.shape
    cells = spatial[0] * spatial[1]
    if rows % cells:
      raise ValueError(f"convolutionalize: {name} kernel rows {rows} not divisible by {cells}")
    kernel = jnp.reshape(kernel, (*spatial, rows // cells, cols))
    if name == "fc6" and tuple(pool5_size) != tuple(TORCHVISION_POOL_SIZE):
      kernel = fold_adaptive_pool(kernel, pool5_size)
    out[name] = {**params[name], "kernel": kernel}
  return out
