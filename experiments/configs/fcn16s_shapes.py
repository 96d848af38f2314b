"""FCN-16s on shapes, stage of the chain vgg16_shapes_cls -> fcn32s -> fcn16s -> fcn8s
(see _fcn_shapes.py for the recipe and options; README has the measured figures)."""

import ml_collections

from experiments.configs import _fcn_shapes


def get_config(arg=None) -> ml_collections.ConfigDict:
  return _fcn_shapes.fcn_shapes_config("16s", arg)
