"""Mask R-CNN R50-FPN on COCO 2017 instances: Detectron2's ``mask_rcnn_R_50_FPN_1x`` recipe.

Detectron2 reference: 38.6 box AP / 35.2 mask AP on val2017 (BUILD.md has the field-by-field
reproduction table). SGD at 0.02 with momentum 0.9, weight decay 1e-4 (not on biases /
norms), batch 16, 90k steps with the rate divided by 10 at 60k and 80k, 1k linear warmup
steps; frozen BatchNorm and, as ``FREEZE_AT=2``, a frozen stem and res2 (``lr_multipliers``
0); 80 classes (``coco_instances`` maps COCO's ids to 0..79; crowd objects are not
targets). Anchors 32..512 on P2..P6, RPN 2000 pre-NMS / 1000 post-NMS boxes in training
and 1000/1000 at test, 512 sampled RoIs, smooth-L1 beta 0 (L1) for both box losses,
RoIAlign with pixel-centre alignment (``ROIAlignV2``) and adaptive sampling, up to 100
detections and 100 ground-truth instances per image.

Input: Detectron2's ``ResizeShortestEdge``: training shorter side drawn from
640, 672, ..., 800, test shorter side 800, longer side at most 1333; images are padded to
1344x1344 (a multiple of 32; the pipeline batches square images). Augmentation: horizontal
flip. Official numbers: ``python -m experiments.evaluate_coco --config=mask_rcnn_coco
--workdir=DIR --config.data.manual_dir=<COCO>`` (pycocotools on instances_val2017.json).

Pretrained backbone: the recipe needs ImageNet ResNet-50 weights: pass torchvision's
``resnet50-0676ba61.pth`` (needs torch to read) or its .safetensors/.npz conversion with
``--config.init_weights=<file>``; the loop converts it (``resnet_params_from_torchvision``) into the
backbone's parameters and frozen-BN statistics. No file ships with seg_jax; without one the
frozen-BN backbone stays at random init.
Data: ``--config.data.manual_dir=<folder with train2017/, val2017/, annotations/>`` offline.
``arg``: ``runlocal`` shrinks everything (ResNet-50 at 1/8 width, 64 px, few boxes).
Run: ``python -m experiments.train --config=mask_rcnn_coco --workdir=/tmp/mask_rcnn_coco``.
"""

import ml_collections

from experiments.configs import _options
from seg_jax.training.config import base_config


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = base_config("coco_instances", task="instance")  # data.task='instances'
  config.data.update({"image_size": 1344, "resize": "shorter_side",
                      "min_sizes": (640, 672, 704, 736, 768, 800), "max_size": 1333,
                      "max_instances": 100})
  config.data.augmentation.update({"scale_range": (1.0, 1.0), "flip": True, "crop": True})
  config.model = ml_collections.ConfigDict({
      "name": "mask_rcnn", "num_classes": 80, "backbone_depth": 50, "width": 1.0,
      "frozen_bn": True, "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
      "rpn_batch_size": 256, "rpn_pre_nms_top_n_train": 2000, "rpn_post_nms_top_n_train": 1000,
      "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000, "roi_batch_size": 512,
      "representation_size": 1024, "mask_channels": 256, "max_detections": 100,
      "roi_op": "align", "sampling_ratio": 0, "with_mask": True, "mask_threshold": 0.5})
  config.loss.smooth_l1_beta = 0.0  # L1
  config.optimizer.name = "momentum"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  # FREEZE_AT=2: the stem (conv1, bn1) and res2 (layer1) get no updates.
  config.optimizer.lr_multipliers = {"^backbone/(conv1|bn1|layer1_)": 0.0}
  config.schedule.name = "steps"
  config.schedule.warmup_steps = 1000
  config.schedule.boundaries = (60000, 80000)
  config.schedule.decay_factor = 0.1
  config.batch_size = 16
  config.num_train_steps = 90000
  config.log_every = 100
  config.eval_every = 10000
  config.checkpoint_every = 5000
  config.keep_checkpoints = 2
  config.eval_score_bins = 1000
  config.init_weights = None  # ImageNet ResNet-50 file: must be provided (see docstring)
  config = _options.finish(config, arg)
  if "runlocal" in _options.parse_arg(arg):
    config.data.update({"image_size": 64, "min_sizes": (32, 48), "max_size": 64})
    config.data.max_instances = 8
    config.schedule.boundaries = (3,)
    config.model.update({"rpn_pre_nms_top_n_train": 32, "rpn_post_nms_top_n_train": 16,
                         "rpn_pre_nms_top_n_test": 32, "rpn_post_nms_top_n_test": 16,
                         "rpn_batch_size": 32, "roi_batch_size": 16, "max_detections": 5,
                         "representation_size": 32, "mask_channels": 8,
                         "anchor_sizes": ((8,), (16,), (24,), (32,), (48,))})
  return config
