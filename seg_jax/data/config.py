"""The ``data`` config section: every field the input pipeline and the builders read.

TensorFlow-free on purpose: configs (``seg_jax.training.config.base_config``, the experiment
configs) import it without paying TensorFlow's import. The class names live with the
builders (TFDS modules); this table holds the facts a config needs, and
``seg_jax.data.builders`` builds its specs from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
  """What a config needs to know about one dataset name."""

  num_classes: int  # semantic classes (label values), background included
  train_split: str
  eval_split: str
  has_instances: bool = False


DATASETS: dict[str, DatasetFacts] = {
    "shapes": DatasetFacts(5, "train", "validation", has_instances=True),
    "voc_segmentation": DatasetFacts(21, "train", "validation"),
    "oxford_iiit_pet": DatasetFacts(2, "train", "test"),
    "coco_instances": DatasetFacts(81, "train", "validation", has_instances=True),
}


def dataset_facts(name: str) -> DatasetFacts:
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
  return DATASETS[name]


def default_data_config(name: str = "shapes", **overrides: Any) -> ml_collections.ConfigDict:
  """Every field the pipeline and the builders read, with defaults suited to ``name``."""
  facts = dataset_facts(name)
  cfg = ml_collections.ConfigDict({
      "name": name,
      # TFDS builder config (None: the dataset's default); a dict makes a custom shapes config
      "builder_config": ml_collections.FieldReference(None, field_type=str),
      "data_dir": ml_collections.FieldReference(None, field_type=str),  # None: see builders
      "manual_dir": ml_collections.FieldReference(None, field_type=str),
      "download": True,  # let TFDS download (VOC, Pets) when the network is there
      "image_size": {"voc_segmentation": 512, "oxford_iiit_pet": 128,
                     "coco_instances": 800}.get(name, 64),
      # 'none' | 'longer_side' | 'shorter_side' | 'detr' | 'original' (seg_jax.data.augment)
      "resize": "longer_side" if name in ("oxford_iiit_pet", "coco_instances") else "none",
      # resize='shorter_side' (Detectron2): train shorter side drawn from min_sizes, test
      # shorter side max(min_sizes), longer side at most max_size (image_size >= max_size).
      "min_sizes": (640, 672, 704, 736, 768, 800),
      "max_size": 1333,
      "num_classes": facts.num_classes,
      "ignore_label": 255,
      "task": "semantic",  # or 'instances' (boxes, classes, masks, pad_mask)
      "max_instances": 100 if name == "coco_instances" else 8,
      "train_split": facts.train_split,
      "eval_split": facts.eval_split,
      "augmentation": {"scale_range": (0.5, 2.0), "flip": True, "crop": True},
      "preprocessing": "torchvision",  # or 'caffe' (see seg_jax.data.pipeline)
      "mean": IMAGENET_MEAN,
      "std": IMAGENET_STD,
      "shuffle_buffer": 1024,
      "prefetch": 2,
      "cache": name == "shapes",
  })
  cfg.update(overrides)
  return cfg
