"""FCN-32s on PASCAL VOC with the reference recipe (see voc_base): lr 1e-10, from the Caffe VGG-16
(~/.cache/seg_jax/vgg16_caffe.safetensors).
"""

import ml_collections

from experiments.configs import voc_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  return voc_base.fcn_voc_config("32s", arg)
