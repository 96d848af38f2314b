"""VGG-16-BN (width 1/8) classifier on ``shapes``: the pretrained trunk for SegNet and
DeconvNet (``--config.init_weights=<this run>``). Same task and data as
``vgg16_shapes_cls`` (which see); ``runlocal`` shrinks everything."""

import ml_collections

from experiments.configs import shapes_base, vgg16_shapes_cls


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg) | {"bn"}
  return vgg16_shapes_cls.get_config(",".join(sorted(options)))
