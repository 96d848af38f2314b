"""``detr_coco`` is DETR's reference recipe, field by field.

Reference values, each stated once with its source (facebookresearch/detr):
main.py ``get_args_parser`` defaults; datasets/coco.py ``make_coco_transforms``;
models/backbone.py (``requires_grad_(False)`` unless the name has layer2/3/4, FrozenBatchNorm2d);
d2/configs/detr_256_6_6_torchvision.yaml (IMS_PER_BATCH 64, STEPS (369600,), MAX_ITER 554400).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import detr_coco
from seg_jax.data import augment
from seg_jax.models import get_model
from seg_jax.training import optim

MAIN_PY = {"lr": 1e-4, "lr_backbone": 1e-5, "weight_decay": 1e-4, "epochs": 300, "lr_drop": 200,
           "clip_max_norm": 0.1, "enc_layers": 6, "dec_layers": 6, "dim_feedforward": 2048,
           "hidden_dim": 256, "dropout": 0.1, "nheads": 8, "num_queries": 100,
           "set_cost_class": 1, "set_cost_bbox": 5, "set_cost_giou": 2, "bbox_loss_coef": 5,
           "giou_loss_coef": 2, "eos_coef": 0.1, "aux_loss": True, "backbone": "resnet50"}
TRANSFORMS = {"scales": [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
              "max_size": 1333, "crop_resize": [400, 500, 600], "crop": (384, 600),
              "val_size": 800}
D2 = {"ims_per_batch": 64, "steps": (369600,), "max_iter": 554400}
COCO_TRAIN_IMAGES = 118287


def test_fields_equal_the_reference():
  config = detr_coco.get_config()
  model, opt, loss, data = config.model, config.optimizer, config.loss, config.data
  assert (model.num_encoder_layers, model.num_decoder_layers) == (
      MAIN_PY["enc_layers"], MAIN_PY["dec_layers"])
  assert model.d_model == MAIN_PY["hidden_dim"] and model.num_heads == MAIN_PY["nheads"]
  assert model.dim_feedforward == MAIN_PY["dim_feedforward"]
  assert model.dropout == MAIN_PY["dropout"] and model.num_queries == MAIN_PY["num_queries"]
  assert model.backbone_depth == 50 and model.frozen_bn and model.feature_level == "c5"
  assert model.query_type == "learned" and not model.spatial_prior
  assert (loss.class_weight, loss.bbox_weight, loss.giou_weight) == (
      MAIN_PY["set_cost_class"], MAIN_PY["set_cost_bbox"], MAIN_PY["set_cost_giou"])
  assert (loss.bbox_weight, loss.giou_weight) == (MAIN_PY["bbox_loss_coef"],
                                                  MAIN_PY["giou_loss_coef"])
  assert loss.eos_coef == MAIN_PY["eos_coef"] and loss.aux_loss == MAIN_PY["aux_loss"]
  assert opt.name == "adamw" and opt.learning_rate == MAIN_PY["lr"]
  assert opt.weight_decay == MAIN_PY["weight_decay"] and opt.decay_all  # torch AdamW: all
  assert opt.grad_clip_norm == MAIN_PY["clip_max_norm"]
  assert config.batch_size == D2["ims_per_batch"]
  steps_per_epoch = COCO_TRAIN_IMAGES // D2["ims_per_batch"]
  assert config.num_train_steps == MAIN_PY["epochs"] * steps_per_epoch == D2["max_iter"]
  assert tuple(config.schedule.boundaries) == (MAIN_PY["lr_drop"] * steps_per_epoch,) == D2["steps"]
  assert data.resize == "detr" and list(data.min_sizes) == TRANSFORMS["scales"]
  assert data.max_size == TRANSFORMS["max_size"] and max(data.min_sizes) == TRANSFORMS["val_size"]
  assert data.image_size >= TRANSFORMS["max_size"] and data.image_size % 32 == 0
  assert data.augmentation.crop and data.augmentation.flip
  assert tuple(data.augmentation.scale_range) == (1.0, 1.0)
  # the crop branch's constants
  assert list(augment.DETR_CROP_RESIZE_SIZES) == TRANSFORMS["crop_resize"]
  assert tuple(augment.DETR_CROP_RANGE) == TRANSFORMS["crop"]
  assert augment.DETR_CROP_PROBABILITY == 0.5


def test_schedule_is_a_step_drop_at_two_thirds():
  config = detr_coco.get_config()
  schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate,
                                 config.num_train_steps)
  drop = config.schedule.boundaries[0]
  assert drop * 3 == config.num_train_steps * 2
  rates = [float(schedule(s)) for s in (0, drop - 1, drop, config.num_train_steps - 1)]
  np.testing.assert_allclose(rates, [MAIN_PY["lr"]] * 2 + [MAIN_PY["lr"] / 10] * 2, rtol=1e-6)
  long = detr_coco.get_config("ep500")
  assert long.num_train_steps == 500 * (COCO_TRAIN_IMAGES // 64)
  assert long.schedule.boundaries[0] == 400 * (COCO_TRAIN_IMAGES // 64)
  with pytest.raises(ValueError, match="one schedule"):
    detr_coco.get_config("ep300,ep500")


def test_backbone_stem_and_layer1_frozen_rest_at_a_tenth():
  """The multipliers on the real parameter names (ResNet-50 at 1/8 width: same names)."""
  config = detr_coco.get_config("runlocal")
  model = get_model("detr", **{k: v for k, v in config.model.items() if k != "name"})
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  multipliers = optim.lr_multiplier_tree(params["params"], config.optimizer.lr_multipliers)
  flat = {optim.param_path(p): m for p, m in jax.tree_util.tree_leaves_with_path(multipliers)}
  want_backbone = MAIN_PY["lr_backbone"] / MAIN_PY["lr"]
  for name, multiplier in flat.items():
    if not name.startswith("backbone/"):
      assert multiplier == 1.0, name
    elif re.match(r"backbone/(layer2|layer3|layer4)_", name):  # DETR trains these only
      assert multiplier == pytest.approx(want_backbone), name
    else:
      assert multiplier == 0.0, name
  assert any(n.startswith("backbone/conv1") for n in flat)
  assert any(n.startswith("backbone/layer1_") for n in flat)
  assert any(n.startswith("backbone/layer4_") for n in flat)
