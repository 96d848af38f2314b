"""Mask R-CNN on the synthetic shapes instances: ResNet-18 at 1/4 width, FPN 64, 64x64 images.

The torchvision recipe at toy scale: trainable BatchNorm (trained from scratch), anchors
8..48 px for 12-28 px shapes, small RPN/RoI sample sizes, Adam with warmup + cosine.
``model.roi_op`` picks the RoI operator: ``align`` (default), ``align_legacy`` (unaligned
RoIAlign) or ``pool`` (RoIPool). ``runlocal`` shrinks it to a smoke test.
Run: ``python -m experiments.train --config=mask_rcnn_shapes --workdir=/tmp/mask_rcnn_shapes``.
"""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes", task="instance")  # data.task='instances'
  config.data.max_instances = 8
  config.model = ml_collections.ConfigDict({
      "name": "mask_rcnn", "num_classes": 4, "backbone_depth": 18, "width": 0.25,
      "frozen_bn": False, "anchor_sizes": ((8,), (16,), (24,), (32,), (48,)),
      "rpn_batch_size": 128, "rpn_pre_nms_top_n_train": 256, "rpn_post_nms_top_n_train": 128,
      "rpn_pre_nms_top_n_test": 256, "rpn_post_nms_top_n_test": 64, "roi_batch_size": 64,
      "representation_size": 256, "mask_channels": 32, "max_detections": 16,
      "roi_op": "align", "with_mask": True, "mask_threshold": 0.5})
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.grad_clip_norm = 10.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 100
  # The mask head dominates the step time on CPU (about 1 s/step at batch 8 on 2 busy cores).
  config.batch_size = 8
  # Measured (README): mask AP50 0.560 / 0.779 / 0.819 after 1000 / 2000 / 3000 steps.
  config.num_train_steps = 3000
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 500
  config.eval_score_bins = 1000
  config = shapes_base.finish(config, arg)
  if "runlocal" in shapes_base.parse_arg(arg):
    config.model.update({"rpn_pre_nms_top_n_train": 32, "rpn_post_nms_top_n_train": 16,
                         "rpn_pre_nms_top_n_test": 32, "rpn_post_nms_top_n_test": 16,
                         "rpn_batch_size": 32, "roi_batch_size": 16, "max_detections": 5,
                         "representation_size": 32, "mask_channels": 8,
                         "anchor_sizes": ((4,), (8,), (16,), (24,), (32,))})
  return config
