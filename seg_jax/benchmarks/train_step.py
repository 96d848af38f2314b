"""Timing of the training loop's own train step (and of ``task.predict``) for one config.

:func:`time_train_step` builds the task, model and optimizer from a config with the
builders :mod:`seg_jax.training.loop` uses, wraps :func:`seg_jax.training.step.train_step`
in the loop's ``JitRunner`` (replicated, donated state; batch sharded on a ``'data'``
mesh) and times it on one random batch: median step and inference time after warm-up,
XLA's FLOP count and memory estimate (``compiled.memory_analysis()``: temp + argument +
output bytes) and the process's peak RSS (also as it was before the model was built, which
is mostly the imports). ``python -m experiments.benchmark`` runs it in a
separate process per round (``experiments.benchmark_jax``), alternating with the PyTorch
twin. :func:`conv_profile` times the forward, input-gradient and kernel-gradient
convolutions of a U-Net separately, to show where a train step spends its time.
"""

from __future__ import annotations

import functools
import resource
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import tasks
from seg_jax.benchmarks.compare import load_average
from seg_jax.ops.conv import conv2d
from seg_jax.training import loop, optim, sharding
from seg_jax.training import step as step_lib
from seg_jax.training.state import create_train_state

MB = 2**20


def peak_rss_mb() -> float:
  """This process's peak resident set size so far (``ru_maxrss`` is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(fn: Callable[[], Any], steps: int, warmup: int = 2) -> float:
  """Median wall time of ``fn()`` (blocked until ready) over ``steps`` calls after warm-up."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak_gflops(size: int = 1024, steps: int = 5) -> float:
  """Achieved GFLOP/s of one float32 ``size x size`` matmul (the reference 'peak')."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda p, q: p @ q)
  return 2 * size**3 / median_seconds(lambda: matmul(a, a), steps) / 1e9


def _cost_flops(compiled) -> Optional[float]:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0]
  flops = (analysis or {}).get("flops")
  return None if flops is None else float(flops)


def xla_memory_bytes(compiled) -> dict[str, int]:
  """XLA's estimate for one executable: temp, argument, output bytes and their total."""
  stats = compiled.memory_analysis()
  sizes = {"temp": int(stats.temp_size_in_bytes),
           "argument": int(stats.argument_size_in_bytes),
           "output": int(stats.output_size_in_bytes)}
  sizes["total"] = sum(sizes.values())
  return sizes


def random_batch(batch: int, size: int, num_classes: int, seed: int = 0) -> dict:
  """A semantic-segmentation batch: normal images and uniform labels (no ignored pixels)."""
  rng = np.random.default_rng(seed)
  return {"image": rng.standard_normal((batch, size, size, 3), dtype=np.float32),
          "label": rng.integers(0, num_classes, (batch, size, size), dtype=np.int32)}


def time_train_step(config, num_classes: int, *, steps: int, warmup: int = 2) -> dict:
  """Times the loop's jitted ``train_step`` and ``task.predict`` for ``config``.

  The batch is random (``config.batch_size`` images of ``config.data.image_size``
  pixels), placed once; the state is donated and threaded through the steps as in the
  loop. Returns a JSON-ready dict (seconds, MB, FLOPs).
  """
  if steps < 1 or warmup < 1:
    raise ValueError(f"steps and warmup must be >= 1, got steps={steps}, warmup={warmup}")
  rss_start_mb = peak_rss_mb()  # imports (jax; TensorFlow/TFDS through the loop) so far
  task = tasks.get_task(config.task)
  model = loop.build_model(config, num_classes)
  tx, _ = optim.create_optimizer(config)
  common = dict(task=task, model=model, config=config)
  # step_lib.train_step is looked up here, at call time: the function the loop runs.
  runner = sharding.make_runner(
      "jit", functools.partial(step_lib.train_step, tx=tx, **common),
      functools.partial(step_lib.eval_step, **common))
  host_batch = random_batch(int(config.batch_size), int(config.data.image_size), num_classes,
                            int(config.seed))
  example = jax.tree.map(lambda x: x[:1], host_batch)
  create = jax.jit(functools.partial(create_train_state, task, model, tx))
  state = runner.place_state(jax.device_get(create(jax.random.key(int(config.seed)), example)))
  batch = runner.place_batch(host_batch)

  start = time.perf_counter()
  # The runner's own jitted step (the loop calls it through runner.train), compiled once
  # here for XLA's cost and memory analysis; the timed calls below reuse this executable.
  compiled = runner._train.lower(state, batch).compile()  # pylint: disable=protected-access
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = runner.train(holder["state"], batch)
    return holder["state"], metrics

  step_s = median_seconds(one_step, steps, warmup)
  predict = jax.jit(lambda variables, b: task.predict(model, variables, b, config))
  infer_s = median_seconds(lambda: predict(holder["state"].variables, batch), steps, warmup)
  flops = _cost_flops(compiled)
  memory = xla_memory_bytes(compiled)
  return {"step_s": step_s, "infer_s": infer_s, "compile_s": compile_s,
          "gflops": None if flops is None else flops / step_s / 1e9,
          "xla_memory_mb": memory["total"] / MB,
          "xla_memory_bytes": memory, "rss_mb": peak_rss_mb(), "rss_start_mb": rss_start_mb,
          "steps": steps, "warmup": warmup, "backend": jax.default_backend()}


def unet_conv_shapes(size: int = 128, base: int = 32, depth: int = 4) -> list[tuple]:
  """(spatial, cin, cout) of every 3x3 convolution of a same-padded U-Net."""
  shapes, cin = [], 3
  for level in range(depth + 1):
    feats = base * 2**level
    shapes += [(size >> level, cin, feats), (size >> level, feats, feats)]
    cin = feats
  for level in reversed(range(depth)):
    feats = base * 2**level
    shapes += [(size >> level, 2 * feats, feats), (size >> level, feats, feats)]
  return shapes


def conv_profile(*, batch: int = 4, size: int = 128, base: int = 32, steps: int = 5,
                 implementations: Sequence[str] = ("native", "gemm")) -> list[dict]:
  """Times forward / input-gradient / kernel-gradient of each U-Net 3x3 conv separately."""
  rows = []
  for spatial, cin, cout in unet_conv_shapes(size, base):
    x = jax.random.normal(jax.random.key(0), (batch, spatial, spatial, cin))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
    dy = jax.random.normal(jax.random.key(2), (batch, spatial, spatial, cout))
    gflop = 2 * batch * spatial**2 * 9 * cin * cout / 1e9
    row = {"shape": f"{spatial}x{spatial} {cin}->{cout}", "gflop": gflop}
    fwd = jax.jit(lambda x_, k_: conv2d(x_, k_, padding=1, implementation="native"))
    row["fwd"] = median_seconds(lambda: fwd(x, kernel), steps)
    for impl in implementations:
      conv = lambda x_, k_, impl=impl: conv2d(x_, k_, padding=1, implementation=impl)
      dx = jax.jit(lambda k_, g: jax.vjp(lambda x_: conv(x_, k_), x)[1](g)[0])
      dk = jax.jit(lambda x_, g: jax.vjp(lambda k_: conv(x_, k_), kernel)[1](g)[0])
      row[f"dx_{impl}"] = median_seconds(lambda: dx(kernel, dy), steps)
      row[f"dk_{impl}"] = median_seconds(lambda: dk(x, dy), steps)
    rows.append(row)
  return rows


def conv_profile_table(rows: Sequence[dict], peak_gflops: float) -> str:
  """Markdown: per-shape ms and GFLOP/s (fraction of the matmul peak) of each pass."""
  keys = [k for k in rows[0] if k not in ("shape", "gflop")]
  lines = ["| conv | GFLOP | " + " | ".join(f"{k} ms (GFLOP/s)" for k in keys) + " |",
           "|" + "---|" * (len(keys) + 2)]
  totals = dict.fromkeys(keys, 0.0)
  for r in rows:
    cells = []
    for k in keys:
      totals[k] += r[k]
      cells.append(f"{r[k] * 1e3:.1f} ({r['gflop'] / r[k]:.0f})")
    lines.append(f"| {r['shape']} | {r['gflop']:.2f} | " + " | ".join(cells) + " |")
  lines.append("| total | {:.2f} | ".format(sum(r["gflop"] for r in rows)) +
               " | ".join(f"{totals[k] * 1e3:.0f}" for k in keys) + " |")
  load = load_average()
  lines.append(f"\nmatmul peak {peak_gflops:.0f} GFLOP/s, load average "
               f"{'n/a' if load is None else format(load, '.2f')}")
  return "\n".join(lines)
