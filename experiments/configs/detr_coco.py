"""DETR-R50 on COCO 2017 boxes: the paper's recipe (Carion et al. 2020).

AdamW at 1e-4 (backbone 1e-5), weight decay 1e-4, gradient clipping 0.1, 6/6 layers, d=256,
8 heads, FFN 2048, dropout 0.1, 100 queries, frozen BatchNorm, auxiliary losses. The paper
trains 500 epochs at batch 64 with the learning rate dropped 10x after 400 (here: cosine
over the same number of steps by default; set ``schedule.name='constant'`` for the 150-epoch
step-free variant). Data: ``coco_instances`` (COCO 2017 via pycocotools, instances task;
crowd objects dropped), whose labels are COCO's 80 categories mapped to 0..79, hence
``num_classes=80`` (the paper's 91 is COCO's largest category id + 1).
``arg``: ``masks`` adds the segmentation head, ``runlocal`` a tiny smoke test.
"""

import ml_collections

from experiments.configs import detr_shapes, shapes_base
from seg_jax.data import default_data_config

_STEPS_PER_EPOCH = 118287 // 64


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg)
  config = shapes_base.base_config("shapes")
  config.data = default_data_config("coco_instances", task="instances", image_size=800,
                                    max_instances=100)
  config.task = "detection"
  config.model = ml_collections.ConfigDict({
      "name": "detr", "num_classes": 80, "num_queries": 100, "d_model": 256, "num_heads": 8,
      "num_encoder_layers": 6, "num_decoder_layers": 6, "dim_feedforward": 2048,
      "dropout": 0.1, "backbone_depth": 50, "backbone_width": 1.0, "frozen_bn": True,
      "with_masks": "masks" in options})
  config.loss = detr_shapes.detr_loss_config()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 0.1
  config.optimizer.lr_multipliers = {"^backbone/": 0.1}
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 0
  config.batch_size = 64
  config.num_train_steps = 500 * _STEPS_PER_EPOCH
  config.eval_every = 10 * _STEPS_PER_EPOCH
  config.checkpoint_every = 5 * _STEPS_PER_EPOCH
  config.eval_score_bins = 1000
  # ImageNet ResNet-50: --config.init_weights=<torchvision resnet50 .pth/.safetensors/.npz>;
  # the loop converts it into the backbone (parameters and frozen-BN statistics).
  config.init_weights = None
  return shapes_base.finish(config, ",".join(options - {"masks"}))
