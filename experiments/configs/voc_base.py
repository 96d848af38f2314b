"""FCN-32s/16s/8s on PASCAL VOC: the reference recipe (fcn.berkeleyvision.org ``voc-fcn*s``
solvers, pytorch-fcn), field for field. BUILD.md "Reproducing FCN on PASCAL VOC" lists each.

* Data: SBD train (8,498) / seg11valid (736) (``voc_segmentation`` config ``fcn``); whole
  images at their original size, one per batch, no augmentation, for training and
  evaluation (``data.resize='original'``); one confusion matrix over the split, 255 ignored.
  Every distinct image shape compiles the train/eval step once (jit caches them).
* Input: Caffe VGG-16 weights with their preprocessing (``data.preprocessing='caffe'``: BGR,
  0..255, minus the Caffe mean pixel). The ``torchvision`` option switches both the weights
  and the preprocessing to torchvision's VGG-16 (RGB, ImageNet mean/std); not the reference.
* Loss: per-pixel softmax cross-entropy *summed* over the image (``loss.reduction='sum'``,
  Caffe ``normalize: false``), which is what the tiny learning rates are for.
* SGD, momentum 0.99, batch 1, lr 1e-10 (32s) / 1e-12 (16s) / 1e-14 (8s), fixed, 100k
  iterations; weight decay 5e-4 on kernels only (``decay_all=False``: none on biases); biases
  at 2x the learning rate; every upsampling layer frozen at bilinear (model
  ``freeze_upsampling='all'`` and lr 0, so weight decay cannot touch it either).
* Staged: FCN-32s starts from VGG-16, FCN-16s from the FCN-32s run (default workdir
  /tmp/seg_jax/fcn32s_voc), FCN-8s from the FCN-16s run; layers new to a stage keep their
  reference initialisation (skip scores zero, upsampling bilinear).

Options (``arg``, comma-separated): ``torchvision`` (above); ``runlocal`` (a few steps, tiny
width, no initial weights: a smoke test on whatever VOC data is at hand).
"""

import ml_collections

from experiments.configs import _options
from seg_jax import pretrained
from seg_jax.training.config import base_config

# Where `python -m experiments.fetch_weights` puts them (~/.cache/seg_jax/): the Caffe VGG-16
# of the reference FCNs (a state-dict conversion in torchvision's key layout, as safetensors)
# and torchvision's VGG-16 (timm vgg16.tv_in1k) for the ``torchvision`` option.
CAFFE_VGG16 = pretrained.local_path("vgg16_caffe")
TORCHVISION_VGG16 = pretrained.local_path("vgg16")

LEARNING_RATES = {"32s": 1e-10, "16s": 1e-12, "8s": 1e-14}
PREVIOUS_STAGE = {"16s": "fcn32s_voc", "8s": "fcn16s_voc"}
OPTIONS = ("runlocal", "torchvision")


def fcn_voc_config(variant: str, arg=None) -> ml_collections.ConfigDict:
  options = _options.parse_arg(arg)
  unknown = options - set(OPTIONS)
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")
  torchvision = "torchvision" in options
  config = base_config("voc_segmentation")
  config.data.builder_config = "fcn"
  config.data.resize = "original"  # data.image_size is then unused
  config.data.augmentation = {"scale_range": (1.0, 1.0), "flip": False, "crop": False}
  config.data.preprocessing = "torchvision" if torchvision else "caffe"
  config.model = ml_collections.ConfigDict({
      "name": f"fcn{variant}", "width": 1.0, "dropout_rate": 0.5, "freeze_upsampling": "all"})
  config.loss.reduction = "sum"
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = LEARNING_RATES[variant]
  config.optimizer.momentum = 0.99
  config.optimizer.weight_decay = 5e-4
  config.optimizer.decay_all = False  # no decay on biases (ndim 1)
  # First match wins: upsampling kernels frozen (lr 0, no decay), biases at twice the rate.
  config.optimizer.lr_multipliers = {"^upscore": 0.0, "/bias$": 2.0}
  config.schedule.name = "constant"
  config.schedule.warmup_steps = 0
  config.batch_size = 1
  config.num_train_steps = 100_000
  config.log_every = 20
  config.eval_every = 4000
  config.checkpoint_every = 4000
  config.keep_checkpoints = 2
  if variant == "32s":
    config.init_weights = TORCHVISION_VGG16 if torchvision else CAFFE_VGG16
  else:
    config.init_weights = _options.run_dir(PREVIOUS_STAGE[variant] +
                                           ("_torchvision" if torchvision else ""))
  if "runlocal" in options:
    _options.apply_runlocal(config)
    config.batch_size = 1
    config.init_weights = ""
  return config


def get_config(arg=None) -> ml_collections.ConfigDict:
  return fcn_voc_config("8s", arg)
