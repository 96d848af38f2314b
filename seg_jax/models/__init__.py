"""Model zoo. ``get_model(name, **kwargs)`` returns a Flax linen module.

The table below is the whole registry: a model name maps to ``module:Class`` inside
``seg_jax.models`` plus default keyword arguments. Add a model by adding a file and a
line here (see BUILD.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "patch_classifier": ("baselines:PatchClassifier", {}),
    "full_res_fcn": ("baselines:FullResFCN", {}),
    "encoder_decoder": ("baselines:EncoderDecoder", {}),
    "vgg16": ("vgg:VGG", {"depth": 16}),
    "vgg19": ("vgg:VGG", {"depth": 19}),
    "fcn32s": ("fcn:FCN", {"variant": "32s"}),
    "fcn16s": ("fcn:FCN", {"variant": "16s"}),
    "fcn8s": ("fcn:FCN", {"variant": "8s"}),
    "deconvnet": ("deconvnet:DeconvNet", {}),
    "segnet": ("segnet:SegNet", {}),
    "unet": ("unet:UNet", {}),
    "detr": ("detr:DETR", {}),
    "mask_rcnn": ("mask_rcnn:MaskRCNN", {}),
}


def model_names() -> list[str]:
  return sorted(_MODELS)


def get_model(name: str, **kwargs):
  """Builds model ``name`` with ``kwargs`` overriding its defaults."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
  target, defaults = _MODELS[name]
  module_name, class_name = target.split(":")
  module = importlib.import_module(f"{__name__}.{module_name}")
  return getattr(module, class_name)(**{**defaults, **kwargs})
