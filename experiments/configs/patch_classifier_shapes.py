"""The sliding-window patch classifier on shapes (Ciresan et al. 2012; Farabet et al. 2013):
each pixel is classified from the 15x15 patch around it. Trained and evaluated densely —
sliding the patch network over the reflect-padded image computes exactly what classifying
every patch on its own computes (``PatchClassifier``; ``python -m experiments.benchmark_patch``
times both), so one step trains on all 64x64 patches of each image at once. The lecture's
baseline beside ``full_res_fcn_shapes`` and the FCNs (README: mean IU and time per image).
"""

import ml_collections

from experiments.configs import shapes_base


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = shapes_base.base_config("shapes")
  config.model = ml_collections.ConfigDict(
      {"name": "patch_classifier", "patch_size": 15, "width": 0.5})
  config.optimizer.learning_rate = 3e-3
  config.data.augmentation.scale_range = (1.0, 1.0)
  config.batch_size = 8
  config.num_train_steps = 600
  config.eval_every = 300
  config.checkpoint_every = 300
  return shapes_base.finish(config, arg)
