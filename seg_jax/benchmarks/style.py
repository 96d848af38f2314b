"""Gatys style transfer speed: optimiser iterations/s (``python -m experiments.benchmark_style``).

Times the jitted pixel-optimisation step of :mod:`seg_jax.style.gatys` (VGG19 width 1,
random weights, default layers) at several sizes for L-BFGS and Adam, after a warm-up that
includes compilation. When torch is importable the same problem runs in PyTorch in the
same process (same VGG taps and losses; ``torch.optim.LBFGS`` with strong-Wolfe line search
and history 10 on the sigmoid parametrisation, ``torch.optim.Adam`` with clamping) and the
JAX/PyTorch ratio is printed. L-BFGS iterations differ in cost (line search), so loss and
gradient evaluations per second are reported too.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.models.vgg import STAGE_CHANNELS, STAGE_LAYERS
from seg_jax.style import gatys


def _images(size: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:size, :size] / size
  content = np.stack([xx, yy, 0.5 + 0.5 * np.sin(12 * xx * yy)], -1)
  content = np.clip(content + 0.05 * rng.normal(size=content.shape), 0, 1)
  style = 0.5 + 0.5 * np.sin(np.stack([40 * xx, 30 * yy, 25 * (xx + yy)], -1))
  return content.astype(np.float32), style.astype(np.float32)


def bench_jax(optimizer: str, size: int, steps: int, warmup: int, depth: int = 19,
              width: float = 1.0) -> dict:
  """Seconds per step of the jitted JAX step (after ``warmup`` steps incl. compilation)."""
  config = gatys.StyleConfig(depth=depth, width=width, size=size, optimizer=optimizer)
  params = gatys.init_vgg_params(config)
  opt = gatys.PixelOptimizer(gatys.build_vgg(config), config)
  content, style = (jnp.asarray(a)[None] for a in _images(size))
  targets = opt.targets(params, content, style)
  z = gatys._unrender(content, opt.parametrization)  # pylint: disable=protected-access
  state = opt.init(z)
  start = time.perf_counter()
  for _ in range(warmup):
    z, state, value, _ = opt.step(z, state, targets, params)
  jax.block_until_ready(z)
  compile_and_warmup = time.perf_counter() - start
  evals, start = 0, time.perf_counter()
  for _ in range(steps):
    z, state, value, e = opt.step(z, state, targets, params)
    evals += int(e)
  jax.block_until_ready((z, value))
  seconds = time.perf_counter() - start
  return {"it_s": steps / seconds, "evals_s": evals / seconds, "warmup_s": compile_and_warmup,
          "loss": float(value)}


def _torch_problem(size: int, depth: int):
  """Same VGG taps, losses and random init as the JAX side, in PyTorch (NCHW)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  layers, cin = [], 3
  for stage, count in enumerate(STAGE_LAYERS[depth], start=1):
    for i in range(1, count + 1):
      conv = torch.nn.Conv2d(cin, STAGE_CHANNELS[stage - 1], 3, padding=1)
      torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
      torch.nn.init.zeros_(conv.bias)
      layers.append((f"relu{stage}_{i}", conv))
      cin = STAGE_CHANNELS[stage - 1]
    layers.append((f"pool{stage}", None))
  wanted = set(gatys.DEFAULT_CONTENT_LAYERS + gatys.DEFAULT_STYLE_LAYERS)
  mean = torch.tensor(gatys.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(gatys.IMAGENET_STD).view(1, 3, 1, 1)

  def features(image):
    x, out = (image - mean) / std, {}
    for name, conv in layers:
      x = torch.relu(conv(x)) if conv is not None else torch.nn.functional.max_pool2d(x, 2)
      if name in wanted:
        out[name] = x
      if len(out) == len(wanted):
        break
    return out

  def gram(f):
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)

  content, style = (torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
                    for a in _images(size))
  with torch.no_grad():
    p = features(content)
    targets_c = {k: p[k] for k in gatys.DEFAULT_CONTENT_LAYERS}
    s = features(style)
    targets_s = {k: gram(s[k]) for k in gatys.DEFAULT_STYLE_LAYERS}
  for _, conv in layers:
    if conv is not None:
      conv.requires_grad_(False)

  def loss(image):
    f = features(image)
    c = sum(torch.mean((f[k] - v) ** 2) for k, v in targets_c.items()) / len(targets_c)
    st = sum(0.25 * torch.sum((gram(f[k]) - v) ** 2) for k, v in targets_s.items()) / len(
        targets_s)
    return 1.0 * c + 1e3 * st

  return content, loss


def bench_torch(optimizer: str, size: int, steps: int, warmup: int, depth: int = 19) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  content, loss = _torch_problem(size, depth)
  if optimizer == "lbfgs":
    z = torch.logit(content.clamp(0.01, 0.99)).requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=1, history_size=10,
                            line_search_fn="strong_wolfe")
    render = torch.sigmoid
  else:
    z = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.02)
    render = lambda x: x
  evals = [0]

  def closure():
    evals[0] += 1
    opt.zero_grad()
    value = loss(render(z))
    value.backward()
    return value

  def step():
    value = opt.step(closure).detach()
    if optimizer == "adam":
      with torch.no_grad():
        z.clamp_(0, 1)
    return value

  for _ in range(warmup):
    step()
  evals[0], start = 0, time.perf_counter()
  for _ in range(steps):
    value = step()
  seconds = time.perf_counter() - start
  return {"it_s": steps / seconds, "evals_s": evals[0] / seconds, "loss": value.item()}


def run(sizes: Sequence[int] = (256, 512), optimizers: Sequence[str] = ("lbfgs", "adam"), *,
        steps: int = 5, warmup: int = 2, depth: int = 19, with_torch: bool = True) -> None:
  """Prints one line per (size, optimizer): JAX it/s and evals/s, and PyTorch's if wanted."""
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional: the comparison only
    have_torch = with_torch
  except ImportError:
    have_torch = False
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}" +
        (f"; torch {torch.__version__} ({torch.get_num_threads()} threads)" if have_torch
         else "; torch not importable: JAX only"))
  print(f"VGG{depth} width 1, random weights; {steps} timed steps after {warmup} warm-up steps")
  for size in sizes:
    for optimizer in optimizers:
      ours = bench_jax(optimizer, size, steps, warmup, depth)
      line = (f"{size}px {optimizer:5s} jax   {ours['it_s']:7.3f} it/s  "
              f"{ours['evals_s']:7.3f} evals/s  (warm-up+compile {ours['warmup_s']:.1f}s)")
      if have_torch:
        theirs = bench_torch(optimizer, size, steps, warmup, depth)
        line += (f" | torch {theirs['it_s']:7.3f} it/s  {theirs['evals_s']:7.3f} evals/s"
                 f" | jax/torch it/s {ours['it_s'] / theirs['it_s']:.2f}")
      print(line, flush=True)
