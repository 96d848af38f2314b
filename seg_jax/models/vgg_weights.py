"""ImageNet VGG weights published for PyTorch, imported into every VGG-based model.

This is the VGG family's weight import (VGG, FCN, SegNet, DeconvNet). Layouts understood:

* torchvision ``vgg16-397923af.pth``: ``features.{i}.weight`` ``(O, I, 3, 3)`` + ``.bias`` for
  every conv (``i`` counts conv, ReLU and pool modules), ``classifier.0`` (fc6,
  ``(4096, 512*7*7)`` flattened in (C, H, W) order), ``classifier.3`` (fc7), ``classifier.6``.
  The Caffe VGG16 that the reference FCNs start from is distributed in this layout too
  (pytorch-fcn's ``vgg16_from_caffe.pth``); it expects BGR 0-255 mean-subtracted inputs
  (``data.preprocessing='caffe'``) instead of torchvision's RGB mean/std ones.
* torchvision ``vgg16_bn``: each conv is followed by ``BatchNorm2d`` (so ``i`` counts conv,
  BN, ReLU); BN ``weight``/``bias`` become our ``conv*_bn`` scale/bias and the running
  statistics our ``batch_stats``. The conv bias is folded into the running mean (BN cancels
  a per-channel shift; our BN trunks have no conv bias).
* timm ``timm/vgg16.tv_in1k`` (``model.safetensors``): same ``features.*``, with fc6/fc7 as
  convolutions ``pre_logits.fc1`` ``(4096, 512, 7, 7)``, ``pre_logits.fc2``
  ``(4096, 4096, 1, 1)`` and ``head.fc`` ``(1000, 4096)``.

Kernels become HWIO; fc6 rows are reordered from torch's (C, H, W) flatten to our
(H, W, C) one (see :class:`seg_jax.models.vgg.VGG`), or kept as a 7x7 convolution with
``convolutional_fc=True``. Any missing key or wrong shape is a one-line ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from seg_jax.layers import scale_channels
from seg_jax.models.vgg import (FC_FEATURES, STAGE_CHANNELS, STAGE_LAYERS,
                                TORCHVISION_POOL_SIZE, check_depth, convolutionalize)
from seg_jax.weights import read_state_dict

Params = dict[str, Any]
BN_EPSILON = 1e-5  # torchvision BatchNorm2d and our trunk's nn.BatchNorm agree


def vgg_feature_indices(depth: int, batch_norm: bool = False) -> dict[str, int]:
  """``{'conv1_1': 0, 'conv1_2': 2, 'conv2_1': 5, ...}``: torchvision ``features`` indices."""
  check_depth(depth)
  indices, index = {}, 0
  for stage, layers in enumerate(STAGE_LAYERS[depth], start=1):
    for i in range(1, layers + 1):
      indices[f"conv{stage}_{i}"] = index
      index += 3 if batch_norm else 2  # Conv2d, [BatchNorm2d,] ReLU
    index += 1  # MaxPool2d
  return indices


class _Reader:
  """Fetches keys from a state dict, checking presence and shape with one-line errors."""

  def __init__(self, state: Mapping[str, np.ndarray], source: str):
    self.state = {k[len("module."):] if k.startswith("module.") else k: v
                  for k, v in state.items()}
    self.source = source
    self.used: set[str] = set()

  def get(self, key: str, shape: Optional[tuple[int, ...]], what: str) -> np.ndarray:
    if key not in self.state:
      raise ValueError(f"{self.source}: missing key {key!r} ({what})")
    value = np.asarray(self.state[key], dtype=np.float32)
    if shape is not None and value.shape != tuple(shape):
      raise ValueError(f"{self.source}: key {key!r} ({what}) has shape {value.shape}, "
                       f"expected {tuple(shape)}")
    self.used.add(key)
    return value


def is_batch_norm_state(state: Mapping[str, Any]) -> bool:
  """True for torchvision ``vgg*_bn`` files (``features.1`` is a BatchNorm)."""
  return any(k.endswith("features.1.running_mean") for k in state)


def vgg_variables_from_state_dict(state: Mapping[str, np.ndarray], *, depth: int = 16,
                                  include_top: bool = True, convolutional_fc: bool = False,
                                  width: float = 1.0, num_classes: Optional[int] = None,
                                  source: str = "state dict") -> dict[str, Params]:
  """``{'params', 'batch_stats'}`` of :class:`VGG` (with ``batch_norm`` for ``_bn`` files)."""
  reader = _Reader(state, source)
  batch_norm = is_batch_norm_state(reader.state)
  params: Params = {}
  stats: Params = {}
  cin = 3
  for name, index in vgg_feature_indices(depth, batch_norm).items():
    cout = scale_channels(STAGE_CHANNELS[int(name[4]) - 1], width)
    what = f"VGG{depth} {name}"
    kernel = reader.get(f"features.{index}.weight", (cout, cin, 3, 3), what)
    bias = reader.get(f"features.{index}.bias", (cout,), what)
    params[name] = {"kernel": kernel.transpose(2, 3, 1, 0)}
    if batch_norm:
      bn, bn_what = f"features.{index + 1}", f"{what} BatchNorm"
      params[f"{name}_bn"] = {"scale": reader.get(f"{bn}.weight", (cout,), bn_what),
                              "bias": reader.get(f"{bn}.bias", (cout,), bn_what)}
      stats[f"{name}_bn"] = {"mean": reader.get(f"{bn}.running_mean", (cout,), bn_what) - bias,
                             "var": reader.get(f"{bn}.running_var", (cout,), bn_what)}
      reader.used.add(f"{bn}.num_batches_tracked")
    else:
      params[name]["bias"] = bias
    cin = cout
  extra = sorted(k for k in reader.state if k.startswith("features.") and k not in reader.used)
  if extra:
    raise ValueError(f"{source}: unexpected key {extra[0]!r}; is this VGG{depth}"
                     f"{'_bn' if batch_norm else ''}?")
  if include_top:
    params.update(_classifier_params(reader, cin, width, num_classes))
    if convolutional_fc:
      params = {k: {n: np.asarray(v) for n, v in p.items()}
                for k, p in convolutionalize(params).items()}
  return {"params": params, "batch_stats": stats}


def _classifier_params(reader: _Reader, cin: int, width: float,
                       num_classes: Optional[int]) -> Params:
  hidden = scale_channels(FC_FEATURES, width)
  if "pre_logits.fc1.weight" in reader.state:  # timm
    fc6 = reader.get("pre_logits.fc1.weight", (hidden, cin, 7, 7), "fc6")
    fc7 = reader.get("pre_logits.fc2.weight", (hidden, hidden, 1, 1), "fc7")[:, :, 0, 0]
    keys = ("pre_logits.fc1.bias", "pre_logits.fc2.bias", "head.fc.weight", "head.fc.bias")
  else:
    fc6 = reader.get("classifier.0.weight", (hidden, cin * 49), "fc6").reshape(hidden, cin, 7, 7)
    fc7 = reader.get("classifier.3.weight", (hidden, hidden), "fc7")
    keys = ("classifier.0.bias", "classifier.3.bias", "classifier.6.weight", "classifier.6.bias")
  if num_classes is None:
    num_classes = reader.get(keys[2], None, "fc8").shape[0]
  fc8 = reader.get(keys[2], (num_classes, hidden), "fc8")
  # (F, C, 7, 7) -> (7, 7, C, F) -> rows in (H, W, C) order, matching our flatten.
  return {"fc6": {"kernel": fc6.transpose(2, 3, 1, 0).reshape(49 * cin, hidden),
                  "bias": reader.get(keys[0], (hidden,), "fc6")},
          "fc7": {"kernel": fc7.T, "bias": reader.get(keys[1], (hidden,), "fc7")},
          "fc8": {"kernel": fc8.T, "bias": reader.get(keys[3], (num_classes,), "fc8")}}


def vgg_params_from_state_dict(state: Mapping[str, np.ndarray], **kwargs) -> Params:
  """The ``params`` of :func:`vgg_variables_from_state_dict` (plain VGG files)."""
  return vgg_variables_from_state_dict(state, **kwargs)["params"]


def load_vgg_params(path: str, *, depth: int = 16, include_top: bool = True,
                    convolutional_fc: bool = False, width: float = 1.0,
                    num_classes: Optional[int] = None) -> Params:
  """Loads ImageNet VGG weights from ``path`` as ``params`` for :class:`VGG`.

  Use as ``VGG(depth, convolutional_fc=...).apply({'params': params}, x)``; torchvision
  files expect RGB in [0, 1] normalised with ImageNet mean/std. ``width``/``num_classes``
  describe the expected shapes (1.0 / inferred for the published files).
  """
  return vgg_params_from_state_dict(read_state_dict(path), depth=depth,
                                    include_top=include_top, convolutional_fc=convolutional_fc,
                                    width=width, num_classes=num_classes, source=path)


def _params_of(variables: Mapping[str, Any]) -> Mapping[str, Any]:
  return variables["params"] if "params" in variables else variables


def _trunk_layers(depth: int) -> list[str]:
  return list(vgg_feature_indices(depth))


def init_from_vgg(vgg_params: Mapping[str, Any], variables: Mapping[str, Any], *,
                  required: Optional[list[str]] = None,
                  vgg_batch_stats: Optional[Mapping[str, Any]] = None) -> Any:
  """Copies VGG layers (conv1_1 ... conv5_3 [+ BN], fc6, fc7 as convolutions) into a model.

  Works for every model built on :func:`seg_jax.models.vgg.vgg_features` (FCN, SegNet,
  DeconvNet). Layers the target lacks are skipped unless listed in ``required``; a bias
  is copied only where the target has one (BatchNorm models have none: in training mode
  BN subtracts the batch mean, which cancels a per-channel conv bias exactly). BN layers
  (``conv*_bn``) and, with ``vgg_batch_stats`` and a full ``variables`` dict, their running
  statistics are copied where both sides have them. Other layers keep their initialisation.
  """
  vgg = convolutionalize(dict(_params_of(vgg_params)))
  target = dict(_params_of(variables))
  for name in required or []:
    if name not in vgg:
      raise ValueError(f"VGG params lack {name!r} (load them with include_top=True)")
    if name not in target:
      raise ValueError(f"target params lack {name!r}")
  depth = 19 if "conv5_4" in vgg else 16
  layers = _trunk_layers(depth)
  layers += [f"{n}_bn" for n in layers] + ["fc6", "fc7"]
  target = _copy_layers(vgg, target, layers)
  if "params" not in variables:
    return target
  out = {**variables, "params": target}
  if vgg_batch_stats and "batch_stats" in variables:
    out["batch_stats"] = _copy_layers(vgg_batch_stats, dict(variables["batch_stats"]), layers)
  return out


def _copy_layers(source: Mapping[str, Any], target: dict, layers: list[str]) -> dict:
  for name in layers:
    if name not in source or name not in target:
      continue
    layer = dict(target[name])
    for leaf in [k for k in source[name] if k in layer]:  # kernel first: stable errors
      value, current = source[name][leaf], layer[leaf]
      if tuple(np.shape(value)) != tuple(np.shape(current)):
        raise ValueError(f"{name}/{leaf}: VGG shape {tuple(np.shape(value))} != target shape "
                         f"{tuple(np.shape(current))} (same width?)")
      layer[leaf] = np.asarray(value, np.float32)
    target[name] = layer
  return target


def fcn_params_from_vgg(vgg_params: Mapping[str, Any], fcn_params: Mapping[str, Any]) -> Any:
  """FCN params whose trunk and fc6/fc7 are the (convolutionalized) VGG-16 weights.

  ``fcn_params`` comes from ``FCN(...).init``; score and upsampling layers keep their
  initialisation.
  """
  required = _trunk_layers(16) + ["fc6", "fc7"]
  return init_from_vgg(vgg_params, fcn_params, required=required)


def load_pretrained(state: Mapping[str, Any], variables: Mapping[str, Any], *, source: str,
                    depth: int = 16, width: float = 1.0, required: Optional[list[str]] = None,
                    **unused_model_fields) -> dict:
  """The VGG family's ``load_pretrained``: a torchvision/Caffe/timm VGG(-BN) state dict into
  ``variables`` (``{'params', 'batch_stats'}``) of a VGG-based model."""
  del unused_model_fields
  vgg = vgg_variables_from_state_dict(state, depth=depth, include_top=True, width=width,
                                      source=source)
  return init_from_vgg(vgg["params"], variables, required=required,
                       vgg_batch_stats=vgg["batch_stats"])


def fold_batch_norm(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                    layers: list[str]) -> dict:
  """Folds eval-mode BatchNorm ``{name}_bn`` into the preceding convolution ``name``.

  ``BN(conv(x) + b) = conv'(x) + b'`` with ``k' = k * s``, ``b' = (b - mean) * s + beta`` and
  ``s = gamma / sqrt(var + eps)`` per output channel: a BN-trunk classifier becomes the
  plain (bias, no BN) VGG trunk with identical eval-mode outputs. Returns new params for
  ``layers`` (other entries unchanged, the ``_bn`` entries removed).
  """
  out = dict(params)
  for name in layers:
    bn = f"{name}_bn"
    if name not in params or bn not in params or bn not in batch_stats:
      continue
    scale = np.asarray(params[bn]["scale"], np.float64) / np.sqrt(
        np.asarray(batch_stats[bn]["var"], np.float64) + BN_EPSILON)
    kernel = np.asarray(params[name]["kernel"], np.float64)
    bias = np.asarray(params[name].get("bias", np.zeros(kernel.shape[-1])), np.float64)
    out[name] = {"kernel": (kernel * scale).astype(np.float32),
                 "bias": ((bias - np.asarray(batch_stats[bn]["mean"], np.float64)) * scale
                          + np.asarray(params[bn]["bias"], np.float64)).astype(np.float32)}
    del out[bn]
  return out


def adapt_transferred(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict:
  """Run-to-run transfer hook for VGG-based models.

  A VGG classifier's dense fc6/fc7 become the convolutions the target has
  ("convolutionalisation", exactly as for ImageNet files; a target fc6 of another size than
  7x7 — the pool5 grid of a classifier trained on smaller images — gets the classifier's
  adaptive pool folded in, :func:`~seg_jax.models.vgg.fold_adaptive_pool`), and a BatchNorm
  trunk going into a model without BatchNorm (VGG-16-BN classifier -> FCN) has its BN folded
  into the convolutions (:func:`fold_batch_norm`). Into bias-free fc6/fc7 convolutions followed by
  BatchNorm (DeconvNet) only the kernels go.
  """
  target_params = target.get("params", {})
  params = dict(source.get("params", {}))
  bn_layers = [n for n in params if f"{n}_bn" in params and f"{n}_bn" not in target_params
               and "bias" in target_params.get(n, {})]
  if bn_layers:
    params = fold_batch_norm(params, source.get("batch_stats", {}), bn_layers)
    stats = {k: v for k, v in source.get("batch_stats", {}).items()
             if k not in {f"{n}_bn" for n in bn_layers}}
    source = {**source, "params": params, "batch_stats": stats}
  dense = [n for n in ("fc6", "fc7") if n in params and np.ndim(params[n].get("kernel")) == 2
           and np.ndim(target_params.get(n, {}).get("kernel")) == 4]
  if not dense:
    return dict(source)
  # The target's fc6 kernel is the pool5 grid the classifier was trained on (FCN/DeconvNet
  # ``fc6_size``): 7x7 for 224 px classifiers; another size folds the adaptive pool in.
  pool5_size = (np.shape(target_params["fc6"]["kernel"])[:2] if "fc6" in dense
                else TORCHVISION_POOL_SIZE)
  converted = convolutionalize({n: params[n] for n in dense}, pool5_size)
  for n in dense:
    layer = {k: np.asarray(v) for k, v in converted[n].items()}
    if "bias" not in target_params[n]:
      # A bias-free target conv is followed by BatchNorm (DeconvNet's fc6/fc7), whose mean
      # subtraction cancels any constant per-channel shift: the classifier's bias drops out.
      layer.pop("bias", None)
    params[n] = layer
  return {**source, "params": params}
