"""In-graph Hungarian matching vs the scipy host matcher.

Run ``python -m experiments.benchmark_matching [--queries=100 --targets=10,50 --batch=8]``.

Times one DETR-sized matching step: a batch of ``(queries, targets)`` cost matrices that
live on the device. The in-graph path is ``jit(vmap(hungarian_matching))``; the host path
copies the costs to numpy and loops ``linear_sum_assignment`` over the batch (what a
``pure_callback`` matcher would pay, minus the callback overhead). Median of several runs
after warm-up.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.ops.matching import hungarian_matching, hungarian_matching_scipy


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up (compilation)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def benchmark(queries: int, targets: int, batch: int, repeats: int = 20,
              seed: int = 0) -> tuple[float, float]:
  """Returns (in-graph seconds, scipy seconds) for one batch of ``(queries, targets)`` costs."""
  rng = np.random.default_rng(seed)
  costs = jax.device_put(jnp.asarray(rng.random((batch, queries, targets)), jnp.float32))
  in_graph = jax.jit(jax.vmap(hungarian_matching))
  # Sanity check: both reach the same optimum.
  rows, cols = map(np.asarray, in_graph(costs))
  host = np.asarray(costs)
  s_rows, s_cols = hungarian_matching_scipy(host)
  for b in range(batch):
    np.testing.assert_allclose(host[b][rows[b], cols[b]].sum(),
                               host[b][s_rows[b], s_cols[b]].sum(), rtol=1e-4)

  def run_in_graph():
    jax.block_until_ready(in_graph(costs))

  def run_scipy():
    hungarian_matching_scipy(np.asarray(costs))  # includes the device->host transfer

  return _median_seconds(run_in_graph, repeats), _median_seconds(run_scipy, repeats)


def run(queries: int = 100, targets: Sequence[int] = (10, 50), batch: int = 8,
        repeats: int = 20) -> list[tuple[float, float]]:
  """Prints one row per target count; returns (in-graph s, scipy s) per row."""
  print(f"backend={jax.default_backend()} devices={jax.device_count()}")
  print(f"{'queries':>7} {'targets':>7} {'batch':>5} {'in-graph ms':>12} {'scipy ms':>10} "
        f"{'in-graph/scipy':>15}")
  rows = []
  for count in targets:
    graph_s, scipy_s = benchmark(queries, count, batch, repeats)
    rows.append((graph_s, scipy_s))
    print(f"{queries:>7} {count:>7} {batch:>5} {graph_s * 1e3:>12.3f} "
          f"{scipy_s * 1e3:>10.3f} {graph_s / scipy_s:>15.2f}", flush=True)
  return rows
