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


def train(parallelism: str, num_devices=None, process_slice=None):
  """Trains a tiny BatchNorm U-Net for a few steps; returns (params, losses, confusion)."""
  import jax
  import ml_collections
  import optax
  from seg_jax.tasks import semantic
  from seg_jax.training import sharding, state as state_lib, step as step_lib

  devices = jax.devices()[:num_devices] if num_devices else None
  if parallelism == "pmap":
    devices = jax.local_devices()[:num_devices] if num_devices else None
  bn_axis = sharding.PMAP_AXIS if parallelism == "pmap" else None
  model = tiny_model(3, bn_axis)
  config = ml_collections.ConfigDict({"data": {"ignore_label": 255},
                                      "loss": {"class_weights": None}})
  tx = optax.sgd(0.1, momentum=0.9)
  common = dict(task=semantic, model=model, config=config)
  runner = sharding.make_runner(
      parallelism, functools.partial(step_lib.train_step, tx=tx, **common),
      functools.partial(step_lib.eval_step, **common), devices)
  batches = make_batches()
  if process_slice is not None:
    batches = [{k: v[process_slice] for k, v in b.items()} for b in batches]
  example = {k: v[:1] for k, v in batches[0].items()}
  init = jax.jit(functools.partial(state_lib.create_train_state, semantic, model, tx))
  state = runner.place_state(jax.device_get(init(jax.random.key(0), example)))
  losses = []
  for batch in batches:
    state, metrics = runner.train(state, runner.place_batch(batch))
    losses.append(float(runner.host(metrics)["loss"]))
  confusion = runner.host(runner.eval(state, runner.place_batch(batches[0])))["confusion"]
  params = runner.host(state.params)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(params)}
  flat.update({"__losses": np.asarray(losses), "__confusion": np.asarray(confusion)})
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
  for run in mode.split(","):  # e.g. jit_1,jit_4,pmap_4 -> OUT_jit_1.npz, ...
    parallelism, num_devices = run.split("_")
    np.savez(f"{out}_{run}.npz", **train(parallelism, int(num_devices)))


if __name__ == "__main__":
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
  main(sys.argv)
