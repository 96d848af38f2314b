"""Import ImageNet VGG weights published for PyTorch (torchvision and timm layouts).

Files: ``.safetensors`` (read with ``safetensors.numpy``), ``.npz``, and ``.pth``/``.pt``/
``.bin`` only when torch is importable. Key layouts understood:

* torchvision ``vgg16-397923af.pth``: ``features.{i}.weight`` ``(O, I, 3, 3)`` + ``.bias`` for
  every conv (``i`` counts conv, ReLU and pool modules), ``classifier.0`` (fc6,
  ``(4096, 512*7*7)`` flattened in (C, H, W) order), ``classifier.3`` (fc7), ``classifier.6``.
* timm ``timm/vgg16.tv_in1k`` (``model.safetensors``): same ``features.*``, with fc6/fc7 as
  convolutions ``pre_logits.fc1`` ``(4096, 512, 7, 7)``, ``pre_logits.fc2``
  ``(4096, 4096, 1, 1)`` and ``head.fc`` ``(1000, 4096)``.

Kernels become HWIO; fc6 rows are reordered from torch's (C, H, W) flatten to our
(H, W, C) one (see :class:`seg_jax.models.vgg.VGG`), or kept as a 7x7 convolution with
``convolutional_fc=True``. Any missing key or wrong shape is a one-line ``ValueError``.

Entry points: :func:`load_vgg_params` (file -> VGG params), :func:`fetch_pretrained`
(timm file from the Hugging Face hub or a local cache), :func:`init_from_vgg` /
:func:`fcn_params_from_vgg` (VGG weights into FCN, SegNet or DeconvNet).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from seg_jax.models.vgg import (FC_FEATURES, STAGE_CHANNELS, STAGE_LAYERS, check_depth,
                                convolutionalize, scaled)

Params = dict[str, Any]

PRETRAINED = {"vgg16": "vgg16.tv_in1k", "vgg19": "vgg19.tv_in1k"}
# The published weights expect RGB in [0, 1] normalised with these (torchvision/timm).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a flat ``{key: array}`` checkpoint (.safetensors, .npz, or .pth with torch)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  if ext == ".npz":
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  if ext in (".pth", ".pt", ".bin"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ValueError(f"reading {path} needs torch; convert it to .safetensors or .npz, or "
                       "use the .safetensors file of timm/vgg16.tv_in1k") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
      if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
        state = state[wrapper]
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
  raise ValueError(f"unsupported weights format {ext!r} ({path}); use .safetensors, .npz or "
                   ".pth")


def vgg_feature_indices(depth: int) -> dict[str, int]:
  """``{'conv1_1': 0, 'conv1_2': 2, 'conv2_1': 5, ...}``: torchvision ``features`` indices."""
  check_depth(depth)
  indices, index = {}, 0
  for stage, layers in enumerate(STAGE_LAYERS[depth], start=1):
    for i in range(1, layers + 1):
      indices[f"conv{stage}_{i}"] = index
      index += 2  # Conv2d, ReLU
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


def vgg_params_from_state_dict(state: Mapping[str, np.ndarray], *, depth: int = 16,
                               include_top: bool = True, convolutional_fc: bool = False,
                               width: float = 1.0, num_classes: Optional[int] = None,
                               source: str = "state dict") -> Params:
  """Converts a torchvision/timm VGG state dict into params of :class:`VGG`."""
  reader = _Reader(state, source)
  params: Params = {}
  cin = 3
  for name, index in vgg_feature_indices(depth).items():
    cout = scaled(STAGE_CHANNELS[int(name[4]) - 1], width)
    what = f"VGG{depth} {name}"
    kernel = reader.get(f"features.{index}.weight", (cout, cin, 3, 3), what)
    bias = reader.get(f"features.{index}.bias", (cout,), what)
    params[name] = {"kernel": kernel.transpose(2, 3, 1, 0), "bias": bias}
    cin = cout
  extra = sorted(k for k in reader.state if k.startswith("features.") and k not in reader.used)
  if extra:
    raise ValueError(f"{source}: unexpected key {extra[0]!r}; is this VGG{depth} without "
                     "BatchNorm?")
  if not include_top:
    return params

  hidden = scaled(FC_FEATURES, width)
  timm = "pre_logits.fc1.weight" in reader.state
  if timm:
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
  params["fc6"] = {"kernel": fc6.transpose(2, 3, 1, 0).reshape(49 * cin, hidden),
                   "bias": reader.get(keys[0], (hidden,), "fc6")}
  params["fc7"] = {"kernel": fc7.T, "bias": reader.get(keys[1], (hidden,), "fc7")}
  params["fc8"] = {"kernel": fc8.T, "bias": reader.get(keys[3], (num_classes,), "fc8")}
  if convolutional_fc:
    params = {k: {n: np.asarray(v) for n, v in p.items()}
              for k, p in convolutionalize(params).items()}
  return params


def load_vgg_params(path: str, *, depth: int = 16, include_top: bool = True,
                    convolutional_fc: bool = False, width: float = 1.0,
                    num_classes: Optional[int] = None) -> Params:
  """Loads ImageNet VGG weights from ``path`` as ``params`` for :class:`VGG`.

  Use as ``VGG(depth, convolutional_fc=...).apply({'params': params}, x)``; inputs are RGB
  in [0, 1] normalised with ``IMAGENET_MEAN``/``IMAGENET_STD``. ``width``/``num_classes`` describe the
  expected shapes (1.0 / inferred for the published files).
  """
  return vgg_params_from_state_dict(read_state_dict(path), depth=depth,
                                    include_top=include_top, convolutional_fc=convolutional_fc,
                                    width=width, num_classes=num_classes, source=path)


def fetch_pretrained(name: str, cache_dir: str) -> str:
  """Path to the timm ``model.safetensors`` of ``name`` ('vgg16.tv_in1k', 'vgg19.tv_in1k').

  Uses ``{cache_dir}/{name}.safetensors`` if present, else downloads ``timm/{name}`` with
  huggingface_hub (when installed and online). Pass the path to :func:`load_vgg_params`.
  """
  name = PRETRAINED.get(name, name)
  local = os.path.join(cache_dir, f"{name}.safetensors")
  if os.path.exists(local):
    return local
  url = f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
  try:
    from huggingface_hub import hf_hub_download  # pylint: disable=g-import-not-at-top
    return hf_hub_download(repo_id=f"timm/{name}", filename="model.safetensors",
                           cache_dir=cache_dir)
  except Exception as error:  # ImportError, offline, unknown repo: same remedy.
    raise FileNotFoundError(f"no weights for {name!r}: download {url} and save it as {local} "
                            f"({type(error).__name__}: {error})".splitlines()[0]) from None


def _params_of(variables: Mapping[str, Any]) -> Mapping[str, Any]:
  return variables["params"] if "params" in variables else variables


def init_from_vgg(vgg_params: Mapping[str, Any], variables: Mapping[str, Any], *,
                  required: Optional[list[str]] = None) -> Any:
  """Copies VGG layers (conv1_1 ... conv5_3, fc6, fc7 as convolutions) into a model's params.

  Works for every model built on :func:`seg_jax.models.vgg.vgg_features` (FCN, SegNet,
  DeconvNet). Layers the target lacks are skipped unless listed in ``required``; a bias
  is copied only where the target has one (BatchNorm models have none: in training mode
  BN subtracts the batch mean, which cancels a per-channel conv bias exactly). Other
  layers keep their initialisation. ``variables`` may be the full variables dict.
  """
  vgg = convolutionalize(dict(_params_of(vgg_params)))
  target = dict(_params_of(variables))
  for name in required or []:
    if name not in vgg:
      raise ValueError(f"VGG params lack {name!r} (load them with include_top=True)")
    if name not in target:
      raise ValueError(f"target params lack {name!r}")
  depth = 19 if "conv5_4" in vgg else 16
  for name in list(vgg_feature_indices(depth)) + ["fc6", "fc7"]:
    if name not in vgg or name not in target:
      continue
    layer = dict(target[name])
    for leaf in [k for k in vgg[name] if k in layer]:  # kernel first: stable errors
      value, current = vgg[name][leaf], layer[leaf]
      if tuple(np.shape(value)) != tuple(np.shape(current)):
        raise ValueError(f"{name}/{leaf}: VGG shape {tuple(np.shape(value))} != target shape "
                         f"{tuple(np.shape(current))} (same width?)")
      layer[leaf] = np.asarray(value, np.float32)
    target[name] = layer
  if "params" in variables:
    return {**variables, "params": target}
  return target


def fcn_params_from_vgg(vgg_params: Mapping[str, Any], fcn_params: Mapping[str, Any]) -> Any:
  """FCN params whose trunk and fc6/fc7 are the (convolutionalized) VGG-16 weights.

  ``fcn_params`` comes from ``FCN(...).init``; score and upsampling layers keep their
  initialisation.
  """
  required = list(vgg_feature_indices(16)) + ["fc6", "fc7"]
  return init_from_vgg(vgg_params, fcn_params, required=required)
