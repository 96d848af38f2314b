"""Inference time per image of experiment configs, each as its config builds it.

For every config: ``loop.build_model(config, num_classes)`` at the config's
``data.image_size``, random weights (the cost does not depend on their values), one jitted
forward pass (``train=False``) over a batch of random images; compilation excluded (one
warm-up call), the median of ``repeats`` timed calls divided by the batch size. Prints one
row per config with the image size, the load average and the date.

``python -m experiments.benchmark_infer --configs=unet_shapes,fcn8s_shapes``
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def time_forward(model, image_size: int, *, batch_size: int = 8, repeats: int = 10,
                 seed: int = 0) -> float:
  """Median seconds per image of ``model``'s jitted inference forward pass."""
  if batch_size < 1 or repeats < 1:
    raise ValueError(f"batch_size and repeats must be >= 1, got {batch_size}, {repeats}")
  images = jnp.asarray(np.random.default_rng(seed).uniform(
      0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32))
  variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(seed), images)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  jax.block_until_ready(forward(variables, images))  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, images))
    times.append(time.perf_counter() - start)
  return statistics.median(times) / batch_size


def run(named_configs: Sequence[tuple[str, object]], num_classes: int, *, batch_size: int = 8,
        repeats: int = 10, image_size: int = 0) -> list[dict]:
  """Times each ``(name, config)``; prints a table; returns the rows. ``image_size`` > 0
  times every model at that size instead of its config's ``data.image_size``."""
  if image_size < 0:
    raise ValueError(f"image_size must be >= 0 (0: each config's own), got {image_size}")
  from seg_jax.training import loop  # local: the loop imports the data stack
  for name, config in named_configs:
    if config.task != "semantic":
      raise ValueError(f"benchmark_infer times semantic models (images in, score maps out); "
                       f"{name} is a {config.task!r} config")
  print(f"| config | image px | ms / image | load before / after |  ({datetime.date.today()}, "
        f"batch {batch_size}, median of {repeats}, float32)")
  print("|---|---:|---:|---|")
  rows = []
  for name, config in named_configs:
    model = loop.build_model(config, num_classes)
    size = int(image_size or config.data.image_size)
    load_before = os.getloadavg()[0]
    seconds = time_forward(model, size, batch_size=batch_size, repeats=repeats)
    load_after = os.getloadavg()[0]
    print(f"| `{name}` | {size} | {1e3 * seconds:.1f} | {load_before:.2f} / {load_after:.2f} |",
          flush=True)
    rows.append({"config": name, "image_size": size, "seconds_per_image": seconds,
                 "load": (load_before, load_after)})
  return rows
