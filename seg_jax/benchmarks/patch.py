"""Patch classifier: naive patch-by-patch segmentation vs. shared fully convolutional evaluation.

``python -m experiments.benchmark_patch [--sizes=64,128] [--patch_size=15] [--width=1.0]``

Both evaluations give the same logits (printed as max |difference|); the dense one shares
the convolutions of overlapping patches, so its cost grows with the image area instead of
area x patch area. Compilation is excluded (one warm-up call each).
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.models.baselines import (PatchClassifier, _classify_windows, segment_dense,
                                      segment_patchwise)


def _timed(fn, repeats: int) -> tuple[float, np.ndarray]:
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def run(sizes: Sequence[int] = (64, 128), *, patch_size: int = 15, width: float = 1.0,
        num_classes: int = 21, batch_size: int = 2048, repeats: int = 1,
        seed: int = 0) -> list[dict]:
  """Times both evaluations on square random images; prints and returns one row per size."""
  model = PatchClassifier(num_classes=num_classes, width=width, patch_size=patch_size)
  variables = jax.jit(lambda k, x: model.init(k, x, method=PatchClassifier.classify_patches))(
      jax.random.key(seed), jnp.zeros((1, patch_size, patch_size, 3)))
  rng = np.random.default_rng(seed)
  rows = []
  print(f"PatchClassifier patch={patch_size} width={width} classes={num_classes} "
        f"batch={batch_size} backend={jax.default_backend()}")
  print(f"{'size':>9} {'pixels':>7} {'patchwise s':>12} {'dense s':>9} {'speed-up':>9} "
        f"{'max|diff|':>10}")
  for size in sizes:
    image = rng.normal(size=(size, size, 3)).astype(np.float32)
    r = patch_size // 2
    padded = jnp.zeros((size + 2 * r, size + 2 * r, 3))
    idx = np.zeros(batch_size, np.int32)
    jax.block_until_ready(_classify_windows(model, variables, padded, idx, idx))  # compile
    segment_dense(model, variables, image)  # compile
    t_naive, naive = _timed(lambda: segment_patchwise(model, variables, image,
                                                      batch_size=batch_size), repeats)
    t_dense, dense = _timed(lambda: segment_dense(model, variables, image), max(repeats, 3))
    row = dict(size=size, patchwise_s=t_naive, dense_s=t_dense, speedup=t_naive / t_dense,
               max_abs_diff=float(np.abs(naive - dense).max()))
    rows.append(row)
    print(f"{size:>4}x{size:<4} {size * size:>7} {t_naive:>12.3f} {t_dense:>9.4f} "
          f"{row['speedup']:>8.1f}x {row['max_abs_diff']:>10.2e}")
  return rows
