"""Train-step and inference timing of the semantic models, side by side with PyTorch eager.

``python -m experiments.benchmark`` is the entry point. Per model this measures compile
time, the median train-step time after warm-up, images/s, the FLOP rate XLA's cost
analysis implies and its fraction of a matmul peak measured in the same process, XLA's
memory estimate, inference time, and (when ``torch`` is importable) the same architecture
in PyTorch eager in the same process. ``ratio = torch step / jax step`` (>= 1: JAX is at
least as fast). :func:`conv_profile` times the forward, input-gradient and kernel-gradient
convolutions of a U-Net separately, to show where a train step spends its time.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

SEMANTIC_MODELS = ("patch_classifier", "full_res_fcn", "encoder_decoder", "fcn32s", "fcn16s",
                   "fcn8s", "deconvnet", "segnet", "unet")


def load_average() -> str:
  """The 1-minute load average, recorded with every figure (the machine is shared)."""
  try:
    return f"{os.getloadavg()[0]:.1f}"
  except OSError:
    return "n/a"


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
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return float(analysis["flops"])
  except Exception:  # pylint: disable=broad-except
    return None


def _memory_mb(compiled) -> Optional[float]:
  try:
    stats = compiled.memory_analysis()
    total = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    return total / 2**20
  except Exception:  # pylint: disable=broad-except
    return None


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def jax_train_setup(name: str, *, batch: int, size: int, width: float, num_classes: int,
                    seed: int = 0):
  """(model, train_step, infer, state, images, labels) for model ``name`` with SGD+momentum."""
  from seg_jax.models import get_model  # pylint: disable=g-import-not-at-top
  model = get_model(name, num_classes=num_classes, width=width)
  keys = jax.random.split(jax.random.key(seed), 4)
  images = jax.random.normal(keys[0], (batch, size, size, 3), jnp.float32)
  labels = jax.random.randint(keys[1], (batch, size, size), 0, num_classes)
  variables = jax.jit(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False))(
      keys[2], images)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.sgd(0.01, momentum=0.9)
  state = (params, batch_stats, tx.init(params))

  def train_step(state, images, labels, rng):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                    train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
      if logits.shape[1:3] != labels.shape[1:3]:  # valid U-Net: centre-crop the labels
        top = (labels.shape[1] - logits.shape[1]) // 2
        left = (labels.shape[2] - logits.shape[2]) // 2
        cropped = labels[:, top:top + logits.shape[1], left:left + logits.shape[2]]
      else:
        cropped = labels
      return cross_entropy(logits.astype(jnp.float32), cropped), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    step_updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, step_updates)
    return (params, updates.get("batch_stats", batch_stats), opt_state), loss

  def infer(state, images):
    params, batch_stats, _ = state
    return model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)

  return model, train_step, infer, state, images, labels, keys[3]


def benchmark_jax(name: str, *, batch: int, size: int, width: float, num_classes: int,
                  steps: int, peak_gflops: float) -> dict:
  """Times one JAX model: compile, train step, inference; flops and memory from XLA."""
  _, train_step, infer, state, images, labels, rng = jax_train_setup(
      name, batch=batch, size=size, width=width, num_classes=num_classes)
  start = time.perf_counter()
  compiled = jax.jit(train_step).lower(state, images, labels, rng).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def one_step():
    holder["state"], loss = compiled(holder["state"], images, labels, rng)
    return loss

  step_s = median_seconds(one_step, steps)
  infer_compiled = jax.jit(infer).lower(holder["state"], images).compile()
  infer_s = median_seconds(lambda: infer_compiled(holder["state"], images), steps)
  flops = _cost_flops(compiled)
  gflops = flops / step_s / 1e9 if flops else None
  return {"model": name, "compile_s": compile_s, "step_s": step_s,
          "images_per_s": batch / step_s, "gflops": gflops,
          "peak_frac": gflops / peak_gflops if gflops else None,
          "memory_mb": _memory_mb(compiled), "infer_s": infer_s,
          "infer_images_per_s": batch / infer_s, "load": load_average()}


def benchmark_torch(name: str, *, batch: int, size: int, width: float, num_classes: int,
                    steps: int, threads: int = 2) -> Optional[dict]:
  """The same architecture in PyTorch eager, or None without torch / a torch equivalent."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  from seg_jax.benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  model = torch_reference.build(name, num_classes=num_classes, width=width)
  if model is None:
    return None
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  images = torch.randn(batch, 3, size, size)
  labels = torch.randint(0, num_classes, (batch, size, size))
  opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                        momentum=0.9)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    model.train()
    opt.zero_grad(set_to_none=True)
    logits = model(images)
    loss = loss_fn(logits, labels)
    loss.backward()
    opt.step()
    return loss.item()

  def infer():
    model.eval()
    with torch.no_grad():
      return model(images).sum().item()

  return {"step_s": _torch_median(step, steps), "infer_s": _torch_median(infer, steps),
          "load": load_average()}


def _torch_median(fn: Callable[[], Any], steps: int, warmup: int = 2) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run(models: Sequence[str] = SEMANTIC_MODELS, *, batch: int = 4, size: int = 128,
        width: float = 0.5, num_classes: int = 21, steps: int = 5,
        with_torch: bool = True) -> list[dict]:
  """Benchmarks every model in ``models``; returns one row per model (see module doc)."""
  peak = matmul_peak_gflops()
  rows = []
  for name in models:
    try:
      row = benchmark_jax(name, batch=batch, size=size, width=width, num_classes=num_classes,
                          steps=steps, peak_gflops=peak)
    except Exception as error:  # pylint: disable=broad-except
      rows.append({"model": name, "error": f"{type(error).__name__}: {error}"[:120]})
      continue
    torch_row = benchmark_torch(name, batch=batch, size=size, width=width,
                                num_classes=num_classes, steps=steps) if with_torch else None
    if torch_row:
      row.update(torch_step_s=torch_row["step_s"], torch_infer_s=torch_row["infer_s"],
                 ratio=torch_row["step_s"] / row["step_s"],
                 infer_ratio=torch_row["infer_s"] / row["infer_s"])
    row["peak_gflops"] = peak
    rows.append(row)
  return rows


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[dict]) -> str:
  """The rows of :func:`run` as a markdown table."""
  header = ("| model | compile s | step s | img/s | GFLOP/s | of peak | XLA mem MB | infer s "
            "| torch step s | ratio (torch/jax) | torch infer s | infer ratio | load |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * 11)
      continue
    lines.append(
        f"| {r['model']} | {_fmt(r['compile_s'], '.1f')} | {_fmt(r['step_s'], '.3f')} | "
        f"{_fmt(r['images_per_s'], '.1f')} | {_fmt(r.get('gflops'), '.0f')} | "
        f"{_fmt(r.get('peak_frac'), '.0%')} | {_fmt(r.get('memory_mb'), '.0f')} | "
        f"{_fmt(r['infer_s'], '.3f')} | {_fmt(r.get('torch_step_s'), '.3f')} | "
        f"{_fmt(r.get('ratio'), '.2f')} | {_fmt(r.get('torch_infer_s'), '.3f')} | "
        f"{_fmt(r.get('infer_ratio'), '.2f')} | {r['load']} |")
  return "\n".join(lines)


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
  from seg_jax.ops.conv import conv2d  # pylint: disable=g-import-not-at-top
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
  lines.append(f"\nmatmul peak {peak_gflops:.0f} GFLOP/s, load average {load_average()}")
  return "\n".join(lines)
