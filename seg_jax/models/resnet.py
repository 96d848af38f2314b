"""ResNet backbone (He et al. 2016) in torchvision's layout, returning C2..C5.

Structure follows torchvision: 7x7/2 stem + 3x3/2 max-pool, basic blocks for depth
18/34 and bottleneck "v1.5" blocks (stride on the 3x3) for 50/101. Submodule names mirror
torchvision state-dict keys with ``.`` replaced by ``_`` at the block level
(``conv1``, ``bn1``, ``layer1_0/conv1``, ``layer2_0/downsample_0`` ...), so
:func:`resnet_params_from_torchvision` is a mechanical rename.

Frozen BatchNorm (``frozen_bn=True``, the detection default) is a fixed affine map whose
four tensors ``scale, bias, mean, var`` all live in the ``batch_stats`` collection: the
optimiser never sees them and they are never updated (applying with
``mutable=['batch_stats']`` returns them unchanged). With ``frozen_bn=False`` it is an
ordinary ``nn.BatchNorm`` (``scale``/``bias`` params, ``mean``/``var`` statistics).
:func:`adapt_transferred` moves a run's layers between the two layouts (``init_weights``).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.layers import Conv
from seg_jax.weights import merge_tree

Dtype = Any

_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class FrozenBatchNorm(nn.Module):
  """``y = (x - mean) / sqrt(var + eps) * scale + bias`` with constant statistics."""
  epsilon: float = 1e-5
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.variable("batch_stats", "scale", lambda: jnp.ones((c,), jnp.float32)).value
    bias = self.variable("batch_stats", "bias", lambda: jnp.zeros((c,), jnp.float32)).value
    mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32)).value
    var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32)).value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    add = bias - mean * mul
    dtype = self.dtype or x.dtype
    return x * mul.astype(dtype) + add.astype(dtype)


def _norm(x, train: bool, frozen: bool, name: str, dtype, zero_init: bool = False,
          axis_name: Optional[str] = None):
  """Frozen or trainable BatchNorm named ``name`` (created in the calling module).

  ``axis_name`` (the ``pmap`` device axis) makes trainable BatchNorm use global batch
  statistics, as it does under ``jit`` with a sharded batch.
  """
  if frozen:
    return FrozenBatchNorm(dtype=dtype, name=name)(x)
  init = nn.initializers.zeros_init() if zero_init else nn.initializers.ones_init()
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=init, dtype=dtype, axis_name=axis_name if train else None,
                      name=name)(x)


def _conv(features, kernel, stride, name, dtype):
  pad = kernel // 2
  return Conv(features, kernel, strides=stride, padding=pad, use_bias=False, dtype=dtype,
              kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
              name=name)


class BasicBlock(nn.Module):
  features: int
  stride: int = 1
  downsample: bool = False
  frozen_bn: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda y, name, zero=False: _norm(y, train, self.frozen_bn, name, self.dtype, zero,
                                             self.bn_axis_name)
    y = _conv(self.features, 3, self.stride, "conv1", self.dtype)(x)
    y = nn.relu(norm(y, "bn1"))
    y = _conv(self.features, 3, 1, "conv2", self.dtype)(y)
    y = norm(y, "bn2", True)
    if self.downsample:
      x = _conv(self.features, 1, self.stride, "downsample_0", self.dtype)(x)
      x = norm(x, "downsample_1")
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int
  stride: int = 1
  downsample: bool = False
  frozen_bn: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda y, name, zero=False: _norm(y, train, self.frozen_bn, name, self.dtype, zero,
                                             self.bn_axis_name)
    y = _conv(self.features, 1, 1, "conv1", self.dtype)(x)
    y = nn.relu(norm(y, "bn1"))
    y = _conv(self.features, 3, self.stride, "conv2", self.dtype)(y)  # v1.5: stride here
    y = nn.relu(norm(y, "bn2"))
    y = _conv(self.features * 4, 1, 1, "conv3", self.dtype)(y)
    y = norm(y, "bn3", True)
    if self.downsample:
      x = _conv(self.features * 4, 1, self.stride, "downsample_0", self.dtype)(x)
      x = norm(x, "downsample_1")
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet-18/34/50/101 feature extractor: ``{'c2','c3','c4','c5'}`` at strides 4..32.

  Attributes:
    depth: 18, 34, 50 or 101.
    width: channel multiplier (1.0 = torchvision widths 64..512 base channels).
    frozen_bn: constant BatchNorm (see module docstring) vs trainable BatchNorm.
    dtype: computation dtype (parameters stay float32).
    bn_axis_name: ``pmap`` axis for global statistics of trainable BatchNorm.
  """
  depth: int = 50
  width: float = 1.0
  frozen_bn: bool = True
  dtype: Optional[Dtype] = None
  bn_axis_name: Optional[str] = None

  def stage_channels(self) -> tuple[int, ...]:
    """Output channels of c2..c5."""
    expansion = 4 if self.depth >= 50 else 1
    return tuple(max(1, int(64 * self.width)) * 2 ** i * expansion for i in range(4))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.depth not in _STAGES:
      raise ValueError(f"ResNet depth must be one of {sorted(_STAGES)}, got {self.depth}")
    if x.ndim != 4:
      raise ValueError(f"ResNet expects NHWC images, got shape {x.shape}")
    block = Bottleneck if self.depth >= 50 else BasicBlock
    base = max(1, int(64 * self.width))
    x = _conv(base, 7, 2, "conv1", self.dtype)(x)
    x = nn.relu(_norm(x, train, self.frozen_bn, "bn1", self.dtype, axis_name=self.bn_axis_name))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outputs = {}
    in_channels = base
    for stage, num_blocks in enumerate(_STAGES[self.depth]):
      features = base * 2 ** stage
      for i in range(num_blocks):
        stride = 2 if (i == 0 and stage > 0) else 1
        downsample = i == 0 and (stride != 1 or in_channels != features * block.expansion)
        x = block(features, stride, downsample, self.frozen_bn, self.dtype,
                  bn_axis_name=self.bn_axis_name, name=f"layer{stage + 1}_{i}")(x, train)
        in_channels = features * block.expansion
      outputs[f"c{stage + 2}"] = x
    return outputs


def resnet_params_from_torchvision(state_dict: Mapping[str, Any],
                                   frozen_bn: bool = True) -> dict[str, dict]:
  """Converts a torchvision ResNet ``state_dict`` (tensors or arrays) to Flax variables.

  Returns ``{'params': ..., 'batch_stats': ...}`` for :class:`ResNet` with the same
  ``frozen_bn`` setting. Conv weights go OIHW -> HWIO; ``fc.*`` and
  ``num_batches_tracked`` are dropped.
  """
  params: dict = {}
  stats: dict = {}

  def put(tree, path, value):
    for key in path[:-1]:
      tree = tree.setdefault(key, {})
    tree[path[-1]] = value

  for key, value in state_dict.items():
    value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value,
                       np.float32)
    parts = key.split(".")
    if parts[0] == "fc" or parts[-1] == "num_batches_tracked":
      continue
    if parts[0].startswith("layer"):
      parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
      if parts[1] == "downsample":
        parts = [parts[0], f"downsample_{parts[2]}"] + parts[3:]
    module, leaf = parts[:-1], parts[-1]
    if leaf == "weight" and value.ndim == 4:
      put(params, module + ["kernel"], np.transpose(value, (2, 3, 1, 0)))
      continue
    name = {"weight": "scale", "bias": "bias", "running_mean": "mean",
            "running_var": "var"}.get(leaf)
    if name is None:
      raise ValueError(f"resnet_params_from_torchvision: unexpected key {key!r}")
    norm_path = module + [name]
    if frozen_bn or name in ("mean", "var"):
      put(stats, norm_path, value)
    else:
      put(params, norm_path, value)
  return {"params": params, "batch_stats": stats}


def load_pretrained(state: Mapping[str, Any], variables: Mapping[str, Any], *, source: str,
                    frozen_bn: bool = True, **unused_model_fields) -> dict:
  """The ResNet family's ``load_pretrained``: a torchvision ResNet state dict into the
  ``backbone`` of a detector's variables (DETR, Mask R-CNN); BN statistics (and, with
  ``frozen_bn``, the affine parameters) go to ``batch_stats``."""
  del unused_model_fields
  params = dict(variables.get("params", {}))
  if "backbone" not in params or "layer1.0.conv1.weight" not in state:
    what = "a ResNet file" if "layer1.0.conv1.weight" in state else "not a torchvision ResNet file"
    raise ValueError(f"init_weights {source}: {what}; the model needs a torchvision ResNet "
                     f"file for its 'backbone' (keys like 'layer1.0.conv1.weight')")
  converted = resnet_params_from_torchvision(state, frozen_bn=frozen_bn)
  stats = dict(variables.get("batch_stats", {}))
  params["backbone"] = merge_tree(params["backbone"], converted["params"], source_name=source,
                                  prefix="backbone/")
  stats["backbone"] = merge_tree(stats.get("backbone", {}), converted["batch_stats"],
                                 source_name=source, prefix="backbone/")
  return {**variables, "params": params, "batch_stats": stats}


_AFFINE = ("scale", "bias")


def adapt_transferred(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict:
  """Run-to-run transfer hook of the ResNet detectors (DETR, Mask R-CNN).

  A run trained with ordinary BatchNorm (``frozen_bn=False``: ``scale``/``bias`` in
  ``params``) going into a model with frozen BatchNorm (all four tensors in ``batch_stats``)
  has each layer's affine pair moved to ``batch_stats``, so the frozen layer computes exactly
  the trained layer's inference map (torchvision's ``FrozenBatchNorm2d`` loading an ImageNet
  BatchNorm); the reverse direction moves them back. Every other tensor is unchanged.
  """
  params = traverse_util.flatten_dict(source.get("params", {}))
  stats = traverse_util.flatten_dict(source.get("batch_stats", {}))
  target_params = traverse_util.flatten_dict(target.get("params", {}))
  target_stats = traverse_util.flatten_dict(target.get("batch_stats", {}))
  layers = [path[:-1] for path in stats if path[-1] == "mean" and path[:-1] + ("var",) in stats]
  for layer in layers:
    keys = [layer + (k,) for k in _AFFINE]
    if (all(k in target_stats and k in params for k in keys)
        and not any(k in stats for k in keys)):
      stats.update({k: params.pop(k) for k in keys})
    elif (all(k in target_params and k in stats for k in keys)
          and not any(k in params for k in keys)):
      params.update({k: stats.pop(k) for k in keys})
  return {**source, "params": traverse_util.unflatten_dict(params),
          "batch_stats": traverse_util.unflatten_dict(stats)}
