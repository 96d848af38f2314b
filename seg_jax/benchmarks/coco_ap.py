"""Exact COCO box (and mask) AP with pycocotools of a trained DETR or Mask R-CNN checkpoint.

Run ``python -m seg_jax.benchmarks.coco_ap --config=mask_rcnn_shapes --workdir=DIR``
(or ``--config=detr_shapes``; extra ``--override field=value`` pairs must repeat any
``--config.field=value`` overrides the run was trained with).

Restores the latest checkpoint of ``DIR`` (trained with ``experiments.train``), predicts
the eval split and scores the detections with :func:`seg_jax.metrics_coco.coco_evaluate`
(the training loop's own eval uses summable score histograms; this is the reference).
DETR's detections are all its queries (COCO keeps the best 100 per image anyway); mask
AP is reported when the model predicts masks.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from typing import Optional

import jax
import numpy as np

from seg_jax.metrics_coco import coco_evaluate


def _per_image(batch: dict, det: dict) -> tuple[list[dict], list[dict]]:
  gts, dts = [], []
  valid_examples = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)))
  for i in np.flatnonzero(valid_examples):
    gt_valid = np.asarray(batch["box_valid"][i]).astype(bool)
    gts.append({"boxes": np.asarray(batch["boxes"][i])[gt_valid],
                "classes": np.asarray(batch["classes"][i])[gt_valid],
                "masks": np.asarray(batch["instance_masks"][i])[gt_valid]})
    keep = np.asarray(det["valid"][i] if "valid" in det
                      else np.ones(np.shape(det["scores"][i]), bool)).astype(bool)
    dts.append({k: np.asarray(det[k][i])[keep] for k in ("boxes", "scores", "classes", "masks")
                if k in det})
  return gts, dts


def coco_scores(config, workdir: str, step: Optional[int] = None) -> dict[str, dict]:
  """``{'bbox': {...}, 'segm': {...}}`` pycocotools stats of the checkpoint in ``workdir``."""
  from seg_jax.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from seg_jax.training import loop  # pylint: disable=g-import-not-at-top
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  setup = loop._Setup(config)  # pylint: disable=protected-access
  checkpointer = checkpoint_lib.Checkpointer(directory, save_every=1, keep=10)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoints in {directory}")
    batches = setup.dataset(config.data.eval_split, train=False)
    first = next(batches)
    state = checkpointer.restore(setup.runner.checkpointable(setup.init_state(first)), step)
  finally:
    checkpointer.close()
  variables = jax.device_get(state.variables)
  predict = jax.jit(lambda v, b: setup.task.predict(setup.model, v, b, config))
  gts, dts = [], []
  for batch in [first, *batches]:
    det = jax.device_get(predict(variables, {"image": batch["image"]}))
    g, d = _per_image(batch, det)
    gts += g
    dts += d
  scores = {"step": step, "images": len(gts), "bbox": coco_evaluate(gts, dts, "bbox")}
  if dts and "masks" in dts[0]:
    scores["segm"] = coco_evaluate(gts, dts, "segm")
  return scores


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="mask_rcnn_shapes", help="config NAME[:ARG]")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--override", action="append", default=[],
                      help="field=value applied to the config (repeatable), e.g. "
                           "model.num_queries=20")
  args = parser.parse_args()
  from experiments import configs  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = configs.config_path(args.config).partition(":")
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for override in args.override:
    key, sep, value = override.partition("=")
    if not sep:
      raise SystemExit(f"--override must be field=value, got {override!r}")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise SystemExit(f"--override: unknown config field {key!r}")
    node[leaf] = value if isinstance(node[leaf], str) else ast.literal_eval(value)
  start = time.time()
  scores = coco_scores(config, args.workdir, args.step)
  print(f"step {scores['step']}, {scores['images']} images, {time.time() - start:.1f}s")
  for kind in ("bbox", "segm"):
    if kind not in scores:
      continue
    s = scores[kind]
    print(f"{kind:>4}: AP {s['AP']:.4f}  AP50 {s['AP50']:.4f}  AP75 {s['AP75']:.4f}")


if __name__ == "__main__":
  main()
