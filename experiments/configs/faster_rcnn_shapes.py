"""Faster R-CNN on the synthetic shapes: ``mask_rcnn_shapes`` with the mask head switched off.

Same backbone, FPN, RPN, RoI sampling, box head, schedule and data (the lineage step before
Mask R-CNN); the task scores boxes only. ``runlocal`` shrinks it to a smoke test.
Run: ``python -m experiments.train --config=faster_rcnn_shapes --workdir=/tmp/faster_rcnn_shapes``.
"""

import ml_collections

from experiments.configs import mask_rcnn_shapes


def get_config(arg=None) -> ml_collections.ConfigDict:
  config = mask_rcnn_shapes.get_config(arg)
  config.model.with_mask = False
  config.model.roi_op = "align"
  return config
