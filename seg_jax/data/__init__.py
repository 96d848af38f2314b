"""Datasets (TFDS builders) and the tf.data input pipeline.

Importing this package only sets environment variables that keep TensorFlow quiet and
stop it from probing cloud metadata servers; TensorFlow itself is imported lazily by the
submodules (see ``_tf.py``), and names below resolve on first use (PEP 562).

Datasets: ``shapes`` (synthetic, offline, prepared automatically), ``voc_segmentation``
(PASCAL VOC 2012, optionally SBD ``train_aug``), ``coco_instances`` (COCO 2017 with
instance masks), ``oxford_iiit_pet`` (TFDS' own builder, mapped to background/pet).
"""

import importlib
import os

os.environ.setdefault("NO_GCE_CHECK", "true")  # never ask the GCE metadata server
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_EXPORTS = {
    "get_dataset": "pipeline",
    "build_tf_dataset": "pipeline",
    "dataset_info": "pipeline",
    "denormalize": "pipeline",
    "default_data_config": "config",
    "get_builder": "builders",
    "resolve_data_dir": "builders",
    "dataset_spec": "builders",
    "Shapes": "shapes",
    "ShapesConfig": "shapes",
    "SHAPE_NAMES": "shapes",
    "render_example": "shapes",
    "VocSegmentation": "voc",
    "VOC_CLASS_NAMES": "voc",
    "pets_to_semantic": "pets",
    "CocoInstances": "coco",
    "COCO_CLASS_NAMES": "coco",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  module_name = _EXPORTS.get(name)
  if module_name is None:
    raise AttributeError(f"module 'seg_jax.data' has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{module_name}")
  return getattr(module, name)


def __dir__():
  return __all__
