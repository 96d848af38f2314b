"""FCN-32s on PASCAL VOC 2012 with the reference recipe (see voc_base for the options)."""

import ml_collections

from experiments.configs import voc_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  return voc_base.fcn_voc_config("32s", arg)
