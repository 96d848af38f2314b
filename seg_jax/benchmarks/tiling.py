"""Peak memory of overlap-tile inference does not grow with the image (apart from its output).

``python -m experiments.benchmark_tiling [--sizes=1000,4000] [--tile=256] [--margin=32]``

Each size runs in a fresh subprocess: build a small same-padded U-Net, compile and warm up
on one batch, create the uint8 image, then reset the resident-set high-water mark
(``/proc/self/clear_refs``; ``ru_maxrss`` growth where unavailable) and run
:func:`seg_jax.inference.predict_tiled`. Reported per size: the peak RSS growth during
tiling, the numpy peak (tracemalloc), the peak bytes of live JAX buffers, and those minus
the output array. Flat "minus output" columns mean memory is bounded by the tile batch.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Sequence

from seg_jax.weights import IMAGENET_MEAN, IMAGENET_STD

MB = 2**20


def _rss_high_water_mb() -> float:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_rss_high_water() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


# A fresh interpreter per size (its own RSS high-water mark) runs _child and prints JSON.
_CHILD_PROGRAM = ("import json, sys; from seg_jax.benchmarks import tiling; "
                  "print(json.dumps(tiling._child(**json.loads(sys.argv[1]))))")


def _child(size: int, tile: int, margin: int, batch_size: int, width: float, depth: int,
           argmax: bool) -> dict:
  # Imported here, in the child only: the parent just starts children and stays free of jax.
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np

  from seg_jax.inference import make_predict_fn, predict_tiled
  from seg_jax.models.unet import UNet

  window = tile + 2 * margin
  model = UNet(num_classes=2, width=width, depth=depth)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, window, window, 3)))
  predict = make_predict_fn(model, variables, argmax=argmax)
  jax.block_until_ready(predict(np.zeros((batch_size, window, window, 3), np.uint8)))

  live_peak = 0

  def predict_and_watch(windows):
    nonlocal live_peak
    out = predict(windows)
    live_peak = max(live_peak, sum(a.nbytes for a in jax.live_arrays()))
    return out

  image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
  reset = _reset_rss_high_water()
  rss_before = _rss_high_water_mb()
  tracemalloc.start()
  start = time.perf_counter()
  output = predict_tiled(predict_and_watch, image, tile=tile, margin=margin,
                         batch_size=batch_size, argmax=argmax, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD)
  seconds = time.perf_counter() - start
  _, numpy_peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return dict(size=size, seconds=seconds, output_mb=output.nbytes / MB,
              image_mb=image.nbytes / MB, rss_growth_mb=_rss_high_water_mb() - rss_before,
              numpy_peak_mb=numpy_peak / MB, jax_live_peak_mb=live_peak / MB,
              hwm_reset=reset, tiles=(-(-size // tile)) ** 2)


def run(sizes: Sequence[int] = (1000, 4000), *, tile: int = 256, margin: int = 32,
        batch_size: int = 4, width: float = 0.125, depth: int = 3,
        argmax: bool = False) -> list[dict]:
  """Runs each size in a fresh interpreter and prints one row per size."""
  rows = []
  print(f"same-padded UNet depth={depth} width={width}, tile={tile} margin={margin} "
        f"batch={batch_size} argmax={argmax}")
  print(f"{'size':>10} {'tiles':>6} {'time s':>7} {'output MB':>10} {'RSS growth':>11} "
        f"{'-output':>8} {'numpy peak':>11} {'-output':>8} {'JAX live':>9}")
  for size in sizes:
    settings = dict(size=size, tile=tile, margin=margin, batch_size=batch_size, width=width,
                    depth=depth, argmax=argmax)
    cmd = [sys.executable, "-c", _CHILD_PROGRAM, json.dumps(settings)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    rows.append(row)
    out = row["output_mb"]
    print(f"{size:>4}x{size:<5} {row['tiles']:>6} {row['seconds']:>7.1f} {out:>10.1f} "
          f"{row['rss_growth_mb']:>11.1f} {row['rss_growth_mb'] - out:>8.1f} "
          f"{row['numpy_peak_mb']:>11.1f} {row['numpy_peak_mb'] - out:>8.1f} "
          f"{row['jax_live_peak_mb']:>9.1f}")
  if rows and not rows[0]["hwm_reset"]:
    print("note: could not reset the RSS high-water mark; RSS growth is ru_maxrss growth")
  return rows
