"""Official COCO evaluation of a trained detector (Mask R-CNN, Faster R-CNN, DETR).

``python -m experiments.evaluate_coco --config=NAME --workdir=DIR [--annotations=FILE]
[--output=results.json]`` (same ``--config.*`` overrides as the training run). Restores the
newest checkpoint, predicts the eval split, writes the results JSON in original pixels and
prints pycocotools' 12 numbers for bbox (and segm). ``--annotations`` defaults to the
official ``<data.manual_dir>/annotations/instances_val2017.json`` for COCO and to
``DIR/coco_gt_<split>.json`` (written from the dataset if missing) otherwise.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default /tmp/seg_jax/NAME).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest readable).")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "COCO-format annotation file.")
_OUTPUT = flags.DEFINE_string("output", None, "Results JSON (default DIR/coco_results.json).")
flags.mark_flag_as_required("config")


def _default_annotations(config, workdir: str) -> str:
  if config.data.name == "coco_instances":
    if not config.data.manual_dir:
      raise ValueError("COCO needs --annotations=<instances_val2017.json> (or "
                       "--config.data.manual_dir with annotations/)")
    return os.path.join(config.data.manual_dir, "annotations", "instances_val2017.json")
  return os.path.join(workdir, f"coco_gt_{config.data.eval_split}.json")


def main(argv):
  configs.start_cli(argv)
  from seg_jax import coco_eval  # pylint: disable=g-import-not-at-top
  from seg_jax.tasks import detection  # pylint: disable=g-import-not-at-top
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  workdir = os.path.abspath(_WORKDIR.value or configs.default_workdir())
  try:
    annotations = _ANNOTATIONS.value or _default_annotations(config, workdir)
    if _ANNOTATIONS.value and not os.path.isfile(annotations):
      raise ValueError(f"--annotations file not found: {annotations}")
    step, pairs = loop.predict_eval_split(config, workdir, step=_STEP.value)
    # the threshold of the task's own masks: DETR's task constant, Mask R-CNN's model field
    # (config.model.mask_threshold, else the model's default)
    mask_threshold = float(detection.MASK_THRESHOLD if config.task == "detection" else
                           loop.build_model(config, int(config.model.num_classes)).mask_threshold)
    output = _OUTPUT.value or os.path.join(workdir, "coco_results.json")
    scores = coco_eval.evaluate_predictions(
        pairs, config.data, int(config.model.num_classes), annotations, output,
        max_detections=100, mask_threshold=mask_threshold)
  except (ValueError, OSError) as error:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(2)
  print(f"step {step}: results {output}, annotations {annotations}")
  print(coco_eval.format_scores(scores))


if __name__ == "__main__":
  app.run(main, flags_parser=configs.parse_flags_or_exit)
