"""Primitive operations: pure ``jnp`` functions, jittable, no Flax state.

Names are resolved lazily (PEP 562) so ``import seg_jax.ops`` stays cheap and each
primitive lives in the one file that explains it.
"""

import importlib
import sys
import types

_EXPORTS = {
    # convolution
    "conv2d": "conv",
    "normalize_padding": "conv",
    "conv_implementation": "conv",
    "kernel_gradient_gemm": "conv",
    "conv_matrix": "conv_matrix",
    "conv_transpose": "conv_matrix",
    "conv_transpose_output_size": "conv_matrix",
    # upsampling
    "bilinear_kernel": "upsample",
    "resize_bilinear": "upsample",
    # unpooling
    "unpool_nearest": "unpool",
    "unpool_bed_of_nails": "unpool",
    "max_pool_with_argmax": "unpool",
    "max_unpool": "unpool",
    # boxes
    "box_area": "boxes",
    "box_iou": "boxes",
    "generalized_box_iou": "boxes",
    "box_xyxy_to_cxcywh": "boxes",
    "box_cxcywh_to_xyxy": "boxes",
    "encode_boxes": "boxes",
    "decode_boxes": "boxes",
    "clip_boxes": "boxes",
    # detection primitives
    "nms": "nms",
    "batched_nms": "nms",
    "roi_align": "roi_align",
    "roi_align_batched": "roi_align",
    "assign_fpn_levels": "roi_align",
    "generate_anchors": "anchors",
    "hungarian_matching": "matching",
    "hungarian_matching_scipy": "matching",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  module_name = _EXPORTS.get(name)
  if module_name is None:
    raise AttributeError(f"module 'seg_jax.ops' has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{module_name}")
  return getattr(module, name)


def __dir__():
  return __all__


class _OpsPackage(types.ModuleType):
  """Keeps ``ops.conv_matrix`` / ``ops.nms`` / ``ops.roi_align`` the *functions*.

  Importing a submodule makes the import system bind it as a package attribute, which
  would shadow a function of the same name (and PEP 562 ``__getattr__`` is then never
  consulted). Whatever the import order, bind the function instead.
  """

  def __setattr__(self, name, value):
    if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
      value = getattr(value, name, value)
    super().__setattr__(name, value)


sys.modules[__name__].__class__ = _OpsPackage
