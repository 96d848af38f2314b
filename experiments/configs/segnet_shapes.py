"""SegNet (max-unpooling decoder) on shapes, 4 encoder stages at 1/4 width.

U-Net's data lessons (no scale jitter, batch 8): mean IU 0.58 / 0.825 / 0.860 after
2000 / 4000 / 6000 steps (README); without skips it learns far more slowly than U-Net.
``pretrained``: width 1/8, the encoder from the ``vgg16_bn_shapes_cls`` run, on the 128 px
images. Run: ``python -m experiments.train --config=segnet_shapes --workdir=/tmp/segnet_shapes``.
"""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg)
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "segnet", "width": 0.25, "num_stages": 4})
  config.optimizer.learning_rate = 3e-3
  config.data.augmentation.scale_range = (1.0, 1.0)
  config.batch_size = 8
  config.num_train_steps = 6000
  config.eval_every = 2000
  config.checkpoint_every = 2000
  if "pretrained" in options:  # the encoder from the VGG-16-BN shapes classifier
    shapes_base.start_from_bn_classifier(config, "runlocal" in options)
    # On the 128 px images (shapes of 24-56 px), the scale the classifier learned: 0.896
    # mean IU after 6000 steps, against 0.739 on the 64 px default (0.846 after 20000).
    config.data.builder_config = "128"
    config.data.image_size = 128
  return shapes_base.finish(config, ",".join(sorted(options - {"pretrained"})))
