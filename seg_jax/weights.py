"""Reading weight files: a flat ``{key: array}`` state dict from ``.safetensors``, ``.npz`` or
(with torch installed) ``.pth``/``.pt``/``.bin`` (``weights_only=True``: pickles are never
executed).

Converting a state dict into a model's variables is the job of the model family
(``seg_jax.models.vgg_weights`` for VGG/FCN/SegNet/DeconvNet, ``seg_jax.models.resnet``
for DETR/Mask R-CNN backbones), reached through ``seg_jax.models.load_pretrained``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

Params = dict[str, Any]

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


def merge_tree(target: Mapping[str, Any], source: Mapping[str, Any], *, source_name: str,
               prefix: str = "") -> dict:
  """``target`` (nested dicts) with every leaf of ``source`` copied in.

  Every key of ``source`` must exist in ``target`` with the same shape; otherwise a
  one-line ``ValueError`` names the layer path and both shapes.
  """
  out = dict(target)
  for key, value in source.items():
    path = f"{prefix}{key}"
    if key not in out:
      raise ValueError(f"{source_name}: {path} does not exist in the model")
    if isinstance(value, Mapping):
      if not isinstance(out[key], Mapping):
        raise ValueError(f"{source_name}: {path} is a layer in the file, a tensor in the model")
      out[key] = merge_tree(out[key], value, source_name=source_name, prefix=f"{path}/")
      continue
    if np.shape(out[key]) != np.shape(value):
      raise ValueError(f"{source_name}: {path} has shape {np.shape(value)}, model expects "
                       f"{np.shape(out[key])}")
    out[key] = np.asarray(value, np.asarray(out[key]).dtype)
  return out
