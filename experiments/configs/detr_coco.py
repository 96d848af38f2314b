"""DETR-R50 on COCO 2017 boxes: the reference recipe (Carion et al. 2020; facebookresearch/detr).

The official ``main.py`` defaults and its Detectron2 config ``d2/configs/
detr_256_6_6_torchvision.yaml``: 300 epochs at batch 64 (1848 steps an epoch, 554,400
steps), the learning rate x0.1 after 200 epochs (2/3 of training; step 369,600); AdamW at
1e-4, backbone 1e-5, weight decay 1e-4 on every parameter (PyTorch's AdamW has no
exclusions), gradient clipping at global norm 0.1; ResNet-50 with frozen BatchNorm, its stem
and layer1 frozen; 6 + 6 post-norm layers, d 256, 8 heads, FFN 2048, dropout 0.1, 100 free
learned queries, auxiliary losses, matching costs and loss weights class 1 / L1 5 / GIoU 2,
no-object weight 0.1. ``arg`` ``ep500``: the paper's main-table schedule (500 epochs, drop
after 400: 42.0 box AP, which the paper says is 1.5 AP above the 300-epoch schedule).

Input (``data.resize='detr'``, seg_jax.data.augment): horizontal flip; shorter side drawn
from 480, 512, ..., 800 with the longer side at most 1333 (DETR's size rule); with
probability 1/2 first a resize to shorter side 400/500/600 and a random 384..600 crop;
test: shorter side 800. Images are padded bottom/right to 1344x1344 with ``pad_mask``
(DETR pads each batch to its largest image; the mask makes the two equivalent up to the
backbone's border, tests/models/test_detr_padding.py). Data: ``coco_instances`` (COCO 2017
via pycocotools; crowd objects dropped; labels are COCO's 80 categories as 0..79, hence
``num_classes=80``, where the paper's 91 is COCO's largest category id + 1).
Official numbers: ``python -m experiments.evaluate_coco --config=detr_coco --workdir=DIR
--config.data.manual_dir=<COCO>`` (pycocotools bbox on instances_val2017.json).
ImageNet ResNet-50: ``--config.init_weights=<torchvision resnet50 .pth/.safetensors/.npz>``;
the loop converts it into the backbone (parameters and frozen-BN statistics).
``arg``: ``masks`` adds the segmentation head, ``ep500`` the 500-epoch schedule,
``runlocal`` a tiny smoke test.
"""

import ml_collections

from experiments.configs import _options
from seg_jax.training.config import base_config

TRAIN_IMAGES = 118287  # COCO train2017; DETR keeps images without annotations
BATCH_SIZE = 64  # 4 per GPU x 16 GPUs
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE  # drop_last batches
SCHEDULES = {"ep300": (300, 200), "ep500": (500, 400)}  # (epochs, lr drop after epoch)
# ConfigDict sorts its keys, so the two patterns must not overlap (first match wins).
FROZEN_STEM_AND_LAYER1 = "^backbone/(conv1|bn1|layer1_)"
TRAINED_BACKBONE = "^backbone/(?!conv1|bn1|layer1_)"


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = _options.parse_arg(arg)
  schedule = [s for s in SCHEDULES if s in options] or ["ep300"]
  if len(schedule) > 1:
    raise ValueError(f"detr_coco: choose one schedule of {sorted(SCHEDULES)}, got {schedule}")
  epochs, drop_epoch = SCHEDULES[schedule[0]]
  config = base_config("coco_instances", task="detection")  # data.task='instances'
  config.data.update({"image_size": 1344, "resize": "detr",
                      "min_sizes": tuple(range(480, 801, 32)), "max_size": 1333,
                      "max_instances": 100})
  config.data.augmentation.update({"scale_range": (1.0, 1.0), "flip": True, "crop": True})
  config.model = ml_collections.ConfigDict({
      "name": "detr", "num_classes": 80, "num_queries": 100, "d_model": 256, "num_heads": 8,
      "num_encoder_layers": 6, "num_decoder_layers": 6, "dim_feedforward": 2048,
      "dropout": 0.1, "backbone_depth": 50, "backbone_width": 1.0, "frozen_bn": True,
      "feature_level": "c5", "query_type": "learned", "spatial_prior": False,
      "with_masks": "masks" in options})
  config.loss.update({"class_weight": 1.0, "bbox_weight": 5.0, "giou_weight": 2.0,
                      "eos_coef": 0.1, "aux_loss": True})
  config.optimizer.update({
      "name": "adamw", "learning_rate": 1e-4, "weight_decay": 1e-4, "decay_all": True,
      "grad_clip_norm": 0.1,
      "lr_multipliers": {FROZEN_STEM_AND_LAYER1: 0.0, TRAINED_BACKBONE: 0.1}})
  config.schedule.update({"name": "steps", "warmup_steps": 0,
                          "boundaries": (drop_epoch * STEPS_PER_EPOCH,), "decay_factor": 0.1})
  config.batch_size = BATCH_SIZE
  config.num_train_steps = epochs * STEPS_PER_EPOCH
  config.log_every = 100
  config.eval_every = 10 * STEPS_PER_EPOCH
  config.checkpoint_every = 5 * STEPS_PER_EPOCH
  config.keep_checkpoints = 2
  config.eval_score_bins = 1000
  config.init_weights = None  # ImageNet ResNet-50 file: must be provided (see docstring)
  config = _options.finish(config, ",".join(options - {"masks"} - set(SCHEDULES)))
  if "runlocal" in options:
    config.data.update({"image_size": 64, "min_sizes": (32, 48), "max_size": 64,
                        "max_instances": 8})
    config.schedule.boundaries = (3,)
    config.model.update({"num_encoder_layers": 1, "num_decoder_layers": 2, "d_model": 32,
                         "num_heads": 4, "dim_feedforward": 64, "num_queries": 6,
                         "backbone_width": 0.125})
  return config
