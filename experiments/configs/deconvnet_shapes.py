"""DeconvNet on shapes at 1/4 width (no scale jitter, batch 8, 2400 steps).

Measured (README): mean IU 0.256 after 2400 steps — it segments circles (IU 0.33) but not yet
squares, triangles or stars. Five pools take a 64 px image to a 2x2 pool5, and the 13
transposed-convolution decoder layers have no skips; the paper starts from ImageNet VGG
weights and trains in two stages, which the options below do. (From scratch, a learning
rate of 1e-3 instead of 3e-3 stayed at the background level, 0.176, for all 2400 steps.)
Run: ``python -m experiments.train --config=deconvnet_shapes --workdir=/tmp/deconvnet_shapes``.

Options (``arg``), all width 1/8 on the 128 px images (shapes of 24-56 px, the classifier's
scale; pool5 is 4x4 there and fc6 3x3 'SAME', the classifier's adaptive pool folded in):
``pretrained`` = stage 1: the encoder and fc6/fc7 from ``vgg16_bn_shapes_cls``, all images,
6000 steps; ``stage2`` = every layer from the ``pretrained`` run (its default workdir) for
another 8000 steps; ``stage3`` = every layer from the ``stage2`` run, 6000 steps at a third of
the rate (1e-3); ``easy`` = the paper's first stage instead, on easy examples
(``single128``: one shape near the centre of each image, the paper's object-centred crops),
from which ``stage2 --config.init_weights=<its run>`` continues; ``runlocal``. On these
images the easy stage stayed at the background level (README), so ``stage2`` starts from
the full-image stage. (On the 64 px images, pool5 2x2, the easy stage then stage 2 reached
only 0.630 mean IU after 12000 steps: a 32 px pool5 cell holds a whole 12-28 px shape.)
"""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = shapes_base.parse_arg(arg)
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict({"name": "deconvnet", "width": 0.25,
                                            "fc_padding": "SAME", "fc6_size": 7})
  config.optimizer.learning_rate = 3e-3
  config.data.augmentation.scale_range = (1.0, 1.0)
  config.batch_size = 8
  config.num_train_steps = 2400
  config.eval_every = 800
  config.checkpoint_every = 800
  runlocal = "runlocal" in options
  stages = options & {"pretrained", "easy", "stage2", "stage3"}
  if len(stages) > 1:
    raise ValueError("deconvnet_shapes: choose one of the options pretrained, easy, stage2, "
                     "stage3")
  if stages:
    # 128 px images (shapes of 24-56 px, the classifier's scale): a 4x4 pool5, fc6 3x3; the
    # classifier's width, so that every stage's trunk matches it and the stage before.
    config.model.width = 0.125
    config.data.builder_config = "128"
    config.data.image_size = 128
    config.model.fc6_size = 3
    config.num_train_steps = 6000
    config.eval_every = 1500
    config.checkpoint_every = 1500
  if "pretrained" in options or "easy" in options:  # the encoder from the VGG-16-BN classifier
    shapes_base.start_from_bn_classifier(config, runlocal)
  if "easy" in options:  # easy examples: one centred shape per image
    config.data.builder_config = "single128"
    config.num_train_steps = 3000
    config.eval_every = 1000
    config.checkpoint_every = 1000
  if "stage2" in options:  # every layer from the stage-1 network, for another 8000 steps
    config.num_train_steps = 8000
    config.eval_every = 2000
    config.checkpoint_every = 2000
    config.init_weights = shapes_base.run_dir("deconvnet_shapes_pretrained", runlocal)
  if "stage3" in options:  # every layer from stage 2, the staged 6000 steps at a third of the rate
    config.optimizer.learning_rate = 1e-3
    config.init_weights = shapes_base.run_dir("deconvnet_shapes_stage2", runlocal)
  return shapes_base.finish(config, ",".join(sorted(options - stages)))
