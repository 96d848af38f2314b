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


# Model name -> the module (in this package) that owns its pretrained-weight import: a
# ``load_pretrained(state_dict, variables, *, source, **model_fields)`` function and,
# optionally, ``adapt_transferred(source_variables, target_variables)`` that maps another
# seg_jax run's variables onto this model (e.g. a VGG classifier's dense fc6 -> conv fc6).
_PRETRAINED: dict[str, str] = {
    "vgg16": "vgg_weights", "vgg19": "vgg_weights", "segnet": "vgg_weights",
    "deconvnet": "vgg_weights", "fcn32s": "fcn", "fcn16s": "fcn", "fcn8s": "fcn",
    "detr": "resnet", "mask_rcnn": "resnet",
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


def load_pretrained(name: str, state: dict, variables: dict, *, source: str,
                    **model_fields) -> dict:
  """``variables`` with the weights of the file ``state`` (a flat torch-style state dict)
  converted by model ``name``'s family (VGG/Caffe VGG/VGG-BN or torchvision ResNet)."""
  if name not in _PRETRAINED:
    known = ", ".join(sorted(_PRETRAINED))
    raise ValueError(f"model {name!r} cannot import a weights file ({source}); models that can: "
                     f"{known}; to start from another seg_jax run pass its run directory")
  module = importlib.import_module(f"{__name__}.{_PRETRAINED[name]}")
  return module.load_pretrained(state, variables, source=source, **model_fields)


def adapt_transferred(name: str, source: dict, target: dict) -> dict:
  """``source`` variables (another run) mapped onto model ``name``'s layout, if its family
  needs that; otherwise ``source`` unchanged."""
  if name not in _PRETRAINED:
    return source
  module = importlib.import_module(f"{__name__}.{_PRETRAINED[name]}")
  adapt = getattr(module, "adapt_transferred", None)
  return source if adapt is None else adapt(source, target)
