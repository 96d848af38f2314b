"""FCN on PASCAL VOC 2012 (Long, Shelhamer & Darrell): the reference training recipe.

Two equivalent recipes (``arg``):

* default ("normalised", the FCN paper's Sec. 4.3): minibatch 20 images, SGD momentum 0.9,
  lr 1e-4, weight decay 5e-4. Our cross-entropy is averaged over valid pixels.
* ``heavy`` (the later reference Caffe solvers): batch 1, momentum 0.99, lr 1e-10 on the
  *summed* (unnormalised) pixel loss. With our averaged loss the same step size is
  lr = 1e-10 * pixels per image, i.e. about 1e-5 for 320x320 crops.

``config.init_weights`` points to torchvision's ImageNet VGG-16 (timm ``vgg16.tv_in1k``
safetensors, see ``seg_jax.weights.fetch_pretrained``); a missing file stops the run with
a one-line error naming it. Set it to '' to train from scratch. The paper initialises
FCN-16s from a trained FCN-32s and FCN-8s from FCN-16s; here every variant starts from
VGG-16 (override ``init_weights`` to stage them). ``runlocal`` shrinks everything.
"""

import os

import ml_collections

from experiments.configs import shapes_base

DEFAULT_VGG16 = os.path.join("~", ".cache", "seg_jax", "vgg16.tv_in1k.safetensors")


def fcn_voc_config(variant: str, arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg)
  unknown = options - {"heavy", "runlocal"}
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)}; known: heavy, runlocal")
  config = shapes_base.base_config("voc_segmentation")
  config.model = ml_collections.ConfigDict(
      {"name": f"fcn{variant}", "width": 1.0, "dropout_rate": 0.5})
  config.data.image_size = 320
  config.optimizer.name = "sgd"
  config.optimizer.weight_decay = 5e-4
  # The final upsampling is frozen (stop_gradient), but coupled weight decay would still shrink
  # it: give it a zero learning rate so it stays the exact bilinear kernel.
  final_upsampling = {"32s": "upscore", "16s": "upscore16", "8s": "upscore8"}[variant]
  config.optimizer.lr_multipliers = {f"^{final_upsampling}/kernel$": 0.0}
  config.schedule.name = "constant"
  config.schedule.warmup_steps = 0
  if "heavy" in options:
    config.batch_size = 1
    config.optimizer.momentum = 0.99
    config.optimizer.learning_rate = 1e-10 * config.data.image_size ** 2
    config.num_train_steps = 100_000
  else:
    config.batch_size = 20
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 1e-4
    config.num_train_steps = 20_000
  config.log_every = 100
  config.eval_every = 4000
  config.checkpoint_every = 2000
  config.init_weights = os.path.expanduser(DEFAULT_VGG16)
  if "runlocal" in options:
    shapes_base.apply_runlocal(config)
    config.data.image_size = 64
    config.init_weights = ""
    config.model.width = 0.125
  return config


def get_config(arg=None) -> ml_collections.ConfigDict:
  return fcn_voc_config("8s", arg)
