"""Subprocess workers for the multi-device / multi-process training tests.

Run as ``python _training_workers.py MODE OUT.npz`` with the device count forced through
XLA_FLAGS by the caller (the flag must be set before JAX starts, hence subprocesses).
The same functions give the single-device reference in the parent test process.
"""

import functools
import os
import sys

import numpy as np

NUM_STEPS = 3
GLOBAL_BATCH = 8


def make_batches(num_steps: int = NUM_STEPS, batch: int = GLOBAL_BATCH, size: int = 16):
  rng = np.random.default_rng(0)
  return [{"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
           "label": rng.integers(0, 3, size=(batch, size, size)).astype(np.int32)}
          for _ in range(num_steps)]


def make_instance_batches(num_steps: int = NUM_STEPS, batch: int = GLOBAL_BATCH,
                          size: int = 32, max_objects: int = 3):
  """Bright rectangles on noise as ``instances`` batches; image 0 of each batch is empty."""
  rng = np.random.default_rng(1)
  batches = []
  for _ in range(num_steps):
    image = rng.normal(scale=0.1, size=(batch, size, size, 3)).astype(np.float32)
    boxes = np.zeros((batch, max_objects, 4), np.float32)
    masks = np.zeros((batch, max_objects, size, size), np.uint8)
    valid = np.zeros((batch, max_objects), bool)
    classes = rng.integers(0, 2, size=(batch, max_objects)).astype(np.int32)
    for i in range(1, batch):
      for j in range(rng.integers(1, max_objects + 1)):
        x0, y0 = rng.integers(0, size - 10, size=2)
        w, h = rng.integers(6, 11, size=2)
        boxes[i, j] = (x0, y0, x0 + w, y0 + h)
        masks[i, j, y0:y0 + h, x0:x0 + w] = 1
        valid[i, j] = True
        image[i, y0:y0 + h, x0:x0 + w, classes[i, j]] += 1.0
    classes[~valid] = 0
    batches.append({"image": image, "boxes": boxes, "classes": classes, "box_valid": valid,
                    "instance_masks": masks})
  return batches


def tiny_model(num_classes: int = 3, bn_axis_name=None):
  """Conv-BN-ReLU then a 1x1 classifier: the smallest model with BatchNorm (cheap to compile)."""
  import flax.linen as nn
  from seg_jax.layers import Conv, ConvBNReLU

  class TinySegmenter(nn.Module):
    num_classes: int
    bn_axis_name: object = None

    @nn.compact
    def __call__(self, x, train: bool = False):
      x = ConvBNReLU(4, bn_axis_name=self.bn_axis_name)(x, train)
      return Conv(self.num_classes, 1)(x)

  return TinySegmenter(num_classes, bn_axis_name)


def _instance_setup(name: str, parallelism: str, bn_axis):
  """(task, model, config, tx, batches) for the smallest DETR / Mask R-CNN of the configs."""
  import optax
  from seg_jax import models
  from seg_jax.tasks import detection, instance
  from seg_jax.training.config import base_config

  if name == "detr":
    task = detection
    model = models.get_model(
        "detr", num_classes=2, num_queries=5, d_model=16, num_heads=2, num_encoder_layers=1,
        num_decoder_layers=2, dim_feedforward=32, dropout=0.0, backbone_depth=18,
        backbone_width=0.125, frozen_bn=False, feature_level="c4", bn_axis_name=bn_axis)
  else:
    task = instance
    model = models.get_model(
        "mask_rcnn", num_classes=2, backbone_depth=18, width=0.125, frozen_bn=False,
        anchor_sizes=((4,), (8,), (12,), (16,), (24,)), rpn_batch_size=32,
        rpn_pre_nms_top_n_train=32, rpn_post_nms_top_n_train=16, rpn_pre_nms_top_n_test=32,
        rpn_post_nms_top_n_test=16, roi_batch_size=16, representation_size=32,
        mask_channels=8, max_detections=5, bn_axis_name=bn_axis)
  config = base_config(task="detection" if name == "detr" else "instance")  # default losses
  config.update({"parallelism": parallelism, "eval_score_bins": 100})
  config.model.num_classes = 2
  # SGD, not Adam: Adam would blow float noise in zero-gradient parameters (attention key
  # biases) up to full-size steps that differ between device layouts.
  return task, model, config, optax.sgd(0.01, momentum=0.9), make_instance_batches()


def train(parallelism: str, num_devices=None, process_slice=None, model_name: str = "tiny"):
  """Trains a tiny model for a few steps; returns its params, losses and eval statistics.

  ``model_name``: ``tiny`` (BatchNorm segmenter, semantic task), ``detr`` or ``mask_rcnn``.
  """
  import jax
  import optax
  from seg_jax.tasks import semantic
  from seg_jax.training import sharding, state as state_lib, step as step_lib
  from seg_jax.training.config import base_config

  devices = jax.devices()[:num_devices] if num_devices else None
  if parallelism == "pmap":
    devices = jax.local_devices()[:num_devices] if num_devices else None
  bn_axis = sharding.PMAP_AXIS if parallelism == "pmap" else None
  if model_name == "tiny":
    task, model = semantic, tiny_model(3, bn_axis)
    config = base_config()
    tx, batches = optax.sgd(0.1, momentum=0.9), make_batches()
  else:
    task, model, config, tx, batches = _instance_setup(model_name, parallelism, bn_axis)
  common = dict(task=task, model=model, config=config)
  runner = sharding.make_runner(
      parallelism, functools.partial(step_lib.train_step, tx=tx, **common),
      functools.partial(step_lib.eval_step, **common), devices)
  if process_slice is not None:
    batches = [{k: v[process_slice] for k, v in b.items()} for b in batches]
  example = {k: v[:1] for k, v in batches[0].items()}
  init = jax.jit(functools.partial(state_lib.create_train_state, task, model, tx))
  state = runner.place_state(jax.device_get(init(jax.random.key(0), example)))
  losses = []
  for batch in batches:
    state, metrics = runner.train(state, runner.place_batch(batch))
    losses.append(float(runner.host(metrics)["loss"]))
  eval_batch = dict(batches[0], valid=np.ones(len(batches[0]["image"]), bool))
  if model_name == "tiny":
    del eval_batch["valid"]
  stats = runner.host(runner.eval(state, runner.place_batch(eval_batch)))
  params = runner.host(state.params)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}
  flat["__losses"] = np.asarray(losses)
  flat.update({f"__{k}": np.asarray(v) for k, v in stats.items()})
  return flat


def main(argv):
  mode, out = argv[1], argv[2]
  import jax
  jax.config.update("jax_disable_most_optimizations", True)  # compile time dominates
  if mode == "distributed_loop":  # the whole train_and_evaluate on two processes
    import json
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_loop import tiny_config
    from seg_jax.training import loop
    scores = loop.train_and_evaluate(tiny_config(), out)
    with open(os.path.join(out, f"scores_{jax.process_index()}.json"), "w") as f:
      json.dump({k: v for k, v in scores.items() if k != "per_class_iou"}, f)
    jax.distributed.shutdown()
    return
  if mode == "distributed":
    from seg_jax.training import sharding
    sharding.maybe_initialize_distributed(None)  # reads SEG_JAX_* environment variables
    index, count = jax.process_index(), jax.process_count()
    per = GLOBAL_BATCH // count
    result = train(os.environ.get("PARALLELISM", "jit"),
                   process_slice=slice(index * per, (index + 1) * per))
    if index == 0:
      np.savez(out, **result)
    jax.distributed.shutdown()
    return
  model_name, _, runs = mode.rpartition(":")  # e.g. detr:jit_1,jit_4 -> OUT_jit_1.npz, ...
  for run in runs.split(","):
    parallelism, num_devices = run.split("_")
    np.savez(f"{out}_{run}.npz", **train(parallelism, int(num_devices),
                                         model_name=model_name or "tiny"))


if __name__ == "__main__":
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
  main(sys.argv)
