"""The FCN chain on ``shapes`` (shared by ``fcn32s_shapes``, ``fcn16s_shapes``, ``fcn8s_shapes``).

The lecture's story, offline: a VGG-16 classifier (``vgg16_shapes_cls``) is
convolutionalised into FCN-32s (its trained fc6/fc7 become convolutions, the new score
layer starts at zero), FCN-16s starts from the trained FCN-32s and FCN-8s from FCN-16s
(new skip score layers zero-initialised, upsampling bilinear), as in the paper. Each stage's
``init_weights`` defaults to the previous stage's default workdir; ``--config.init_weights=''``
trains from scratch (the ablation). Width 1/8, batch 8, no scale jitter, on the ``128``
images (128 px, shapes of 24-56 px: the objects at the classifier's scale). Not the 64 px
default: there a stride-8 score map can express about 0.88 mean IU at best and a stride-32
one hardly anything (0.21; ``experiments.stride_ceiling``, README); at 128 px 0.96 / 0.63.
"""

import ml_collections

from experiments.configs import shapes_base

PREVIOUS = {"32s": "vgg16_bn_shapes_cls", "16s": "fcn32s_shapes", "8s": "fcn16s_shapes"}


def fcn_shapes_config(variant: str, arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg)
  known = {"runlocal", "atonce"} if variant == "8s" else {"runlocal"}
  unknown = options - known
  if unknown:
    raise ValueError(f"unknown config option(s) {sorted(unknown)} for fcn{variant}_shapes; "
                     f"known: {', '.join(sorted(known))}")
  config = shapes_base.base_config("shapes")
  # fc6 4x4: the classifier's pool5 grid on its 128 px images, so the convolutionalised fc6
  # is exactly the classifier's (its adaptive 7x7 pool folded in).
  config.model = ml_collections.ConfigDict({
      "name": f"fcn{variant}", "width": 0.125, "dropout_rate": 0.0, "freeze_upsampling": "all",
      "at_once": "atonce" in options, "fc6_size": 4})
  config.optimizer.name = "adam"
  # 2e-3: FCN-8s from the same FCN-16s run reached 0.838 mean IU after 2000 steps, 0.827 at
  # 1e-3 (and at 1e-3 0.751 after 1000 steps against 0.703 at 3e-4).
  config.optimizer.learning_rate = 2e-3
  # Every upsampling layer stays the bilinear kernel it starts as (the reference's lr_mult 0).
  config.optimizer.lr_multipliers = {"^upscore": 0.0}
  config.data.builder_config = "128"
  config.data.image_size = 128
  config.data.augmentation.scale_range = (1.0, 1.0)
  config.batch_size = 8
  # 2000 steps (2 epochs of the 8000 images): FCN-16s reached 0.773 mean IU against 0.737
  # after 1000, and FCN-8s from it 0.827 against 0.815 from the 1000-step FCN-16s.
  config.num_train_steps = 2000
  config.eval_every = 500
  config.checkpoint_every = 1000
  if variant == "8s":  # the last stage longer, still within 20 minutes on two CPU cores
    config.num_train_steps = 2500
    config.checkpoint_every = 500
  previous = "vgg16_bn_shapes_cls" if "atonce" in options else PREVIOUS[variant]
  config.init_weights = shapes_base.run_dir(previous, "runlocal" in options)
  return shapes_base.finish(config, "runlocal" if "runlocal" in options else None)
