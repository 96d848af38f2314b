"""FCN-16s on PASCAL VOC with the reference recipe (see voc_base): lr 1e-12, from the FCN-32s run
(default /tmp/seg_jax/fcn32s_voc).
"""

import ml_collections

from experiments.configs import voc_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  return voc_base.fcn_voc_config("16s", arg)
