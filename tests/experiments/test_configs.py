"""Every experiment config defines every field of ``base_config`` for its dataset and task
(the code reads them directly), in every ``arg`` variant's default and ``runlocal`` form."""

import jax
import pytest

from experiments import configs
from seg_jax.training.config import base_config


def _fields(config, prefix=""):
  """Dotted names of every field; sections count as fields too."""
  names = set()
  for key, value in config.items():
    names.add(prefix + key)
    if hasattr(value, "items") and key != "model":  # model fields are the model's own
      names |= _fields(value, f"{prefix}{key}.")
  return names


@pytest.mark.parametrize("name", configs.config_names())
def test_config_has_every_base_field(name):
  for arg in (None, "runlocal"):
    config = configs.load_config(f"{name}:{arg}" if arg else name)
    missing = _fields(base_config(config.data.name, config.task)) - _fields(config)
    assert not missing, f"{name}:{arg or ''} lacks {sorted(missing)}"



def test_detr_masks_stage_trains_only_the_segmentation_head():
  # The paper's second stage: every detector parameter frozen (multiplier 0), BN frozen,
  # the detector run as init; the segmentation head (attention map + mask FPN) trains.
  from experiments.configs import detr_shapes
  from seg_jax.training.optim import lr_multiplier_tree
  config = detr_shapes.get_config("masks")
  assert config.model.with_masks and config.model.frozen_bn
  assert config.init_weights == "/tmp/seg_jax/detr_shapes"
  assert detr_shapes.get_config("masks,runlocal").init_weights == "/tmp/seg_jax/detr_shapes_runlocal"
  params = {"backbone": {"conv1": {"kernel": 0}}, "transformer": {"w": 0},
            "class_embed": {"kernel": 0}, "bbox_embed": {"layers_0": {"kernel": 0}},
            "query_reference": 0, "bbox_attention": {"q": {"kernel": 0}},
            "mask_head": {"lay1": {"kernel": 0}}}
  multipliers = lr_multiplier_tree(params, config.optimizer.lr_multipliers)
  trainable = {k for k, v in multipliers.items()
               if any(m != 0.0 for m in jax.tree_util.tree_leaves(v))}
  assert trainable == {"bbox_attention", "mask_head"}
  with pytest.raises(ValueError, match="unknown config option"):
    detr_shapes.get_config("mask")


def test_detr_learned_queries_start_from_a_detector_backbone():
  from experiments.configs import detr_shapes
  config = detr_shapes.get_config("learned")
  assert (config.model.query_type, config.model.spatial_prior) == ("learned", False)
  assert config.init_weights == "/tmp/seg_jax/detr_shapes"
  assert tuple(config.init_weights_scopes) == ("backbone", "input_proj")
  anchored = detr_shapes.get_config()
  assert config.optimizer.to_dict() == anchored.optimizer.to_dict()  # only the queries differ
  assert config.num_train_steps == anchored.num_train_steps
