"""PyTorch eager twins of seg_jax's U-Net and FCN-32s/16s/8s, for side-by-side timing only.

Imported only when ``torch`` is available (never a requirement of seg_jax). The networks
mirror :mod:`seg_jax.models.unet` (same padding, BatchNorm, 2x2 transposed-conv upsampling,
``concat([skip, up])``) and :mod:`seg_jax.models.fcn` (VGG-16 with conv1_1 padded by 100,
ceil-mode pooling, 7x7 fc6, bilinear transposed-conv upsampling, reference crop offsets,
frozen final upsampling), with the same ``width`` multiplier. Initial values differ.
:func:`time_torch` times one of them as ``python -m experiments.benchmark_torch`` does, in
its own process: SGD with momentum 0.9 (lr 0.01) and mean cross-entropy, like the JAX
side's benchmark config, and ``argmax`` inference.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any, Callable, Optional

import torch
from torch import nn

STAGE_LAYERS_16 = (2, 2, 3, 3, 3)
STAGE_CHANNELS = (64, 128, 256, 512, 512)


def _scaled(channels: int, width: float) -> int:
  # seg_jax.layers.scale_channels, restated: importing it would load jax into the PyTorch
  # worker and inflate its peak RSS (tests/experiments/test_benchmark.py compares the twins).
  return max(1, int(round(channels * width)))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
  return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.1),
          nn.ReLU(inplace=True)]


class UNet(nn.Module):
  """Same-padded U-Net with BatchNorm and transposed-conv upsampling (NCHW)."""

  def __init__(self, num_classes: int, width: float = 1.0, depth: int = 4,
               base_features: int = 64):
    super().__init__()
    feats = [_scaled(base_features * 2**level, width) for level in range(depth + 1)]
    self.down = nn.ModuleList()
    cin = 3
    for level in range(depth):
      self.down.append(nn.Sequential(*_conv_bn_relu(cin, feats[level]),
                                     *_conv_bn_relu(feats[level], feats[level])))
      cin = feats[level]
    self.bottleneck = nn.Sequential(*_conv_bn_relu(cin, feats[depth]),
                                    *_conv_bn_relu(feats[depth], feats[depth]))
    self.upconv, self.up = nn.ModuleList(), nn.ModuleList()
    cin = feats[depth]
    for level in reversed(range(depth)):
      self.upconv.append(nn.ConvTranspose2d(cin, feats[level], 2, stride=2))
      self.up.append(nn.Sequential(*_conv_bn_relu(2 * feats[level], feats[level]),
                                   *_conv_bn_relu(feats[level], feats[level])))
      cin = feats[level]
    self.classifier = nn.Conv2d(cin, num_classes, 1)
    self.pool = nn.MaxPool2d(2, 2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = self.pool(x)
    x = self.bottleneck(x)
    for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
      x = block(torch.cat([skip, upconv(x)], dim=1))
    return self.classifier(x)


def _bilinear_weight(channels: int, kernel_size: int) -> torch.Tensor:
  factor = (kernel_size + 1) // 2
  center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
  og = torch.arange(kernel_size, dtype=torch.float32)
  filt = 1 - torch.abs(og - center) / factor
  weight = torch.zeros(channels, channels, kernel_size, kernel_size)
  weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
  return weight


class FCN(nn.Module):
  """FCN-32s/16s/8s on VGG-16 with the reference Caffe geometry (NCHW)."""

  def __init__(self, num_classes: int = 21, variant: str = "8s", width: float = 1.0,
               dropout_rate: float = 0.5):
    super().__init__()
    self.variant = variant
    layers, cin = [], 3
    self.stage_ends = []
    for stage, count in enumerate(STAGE_LAYERS_16):
      cout = _scaled(STAGE_CHANNELS[stage], width)
      for i in range(count):
        layers += [nn.Conv2d(cin, cout, 3, padding=100 if (stage, i) == (0, 0) else 1),
                   nn.ReLU(inplace=True)]
        cin = cout
      layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
      self.stage_ends.append(len(layers))
    self.features = nn.Sequential(*layers)
    hidden = _scaled(4096, width)
    self.fc = nn.Sequential(nn.Conv2d(cin, hidden, 7), nn.ReLU(inplace=True),
                            nn.Dropout2d(dropout_rate), nn.Conv2d(hidden, hidden, 1),
                            nn.ReLU(inplace=True), nn.Dropout2d(dropout_rate))
    self.score_fr = nn.Conv2d(hidden, num_classes, 1)
    self.score_pool4 = nn.Conv2d(_scaled(512, width), num_classes, 1)
    self.score_pool3 = nn.Conv2d(_scaled(256, width), num_classes, 1)
    for conv in (self.score_fr, self.score_pool4, self.score_pool3):
      nn.init.zeros_(conv.weight)
      nn.init.zeros_(conv.bias)

    def upsample(factor: int, trainable: bool) -> nn.ConvTranspose2d:
      up = nn.ConvTranspose2d(num_classes, num_classes, 2 * factor, stride=factor, bias=False)
      with torch.no_grad():
        up.weight.copy_(_bilinear_weight(num_classes, 2 * factor))
      up.weight.requires_grad_(trainable)
      return up

    final = {"32s": 32, "16s": 16, "8s": 8}[variant]
    self.upscore2 = upsample(2, True)
    self.upscore_pool4 = upsample(2, True)
    self.upscore_final = upsample(final, False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[2:]
    taps, h = [], x
    start = 0
    for end in self.stage_ends:
      h = self.features[start:end](h)
      taps.append(h)
      start = end
    pool3, pool4, pool5 = taps[2], taps[3], taps[4]
    score = self.score_fr(self.fc(pool5))
    if self.variant == "32s":
      return self.upscore_final(score)[:, :, 19:19 + height, 19:19 + width]
    up2 = self.upscore2(score)
    s4 = self.score_pool4(pool4)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
    fuse = up2 + s4
    if self.variant == "16s":
      return self.upscore_final(fuse)[:, :, 27:27 + height, 27:27 + width]
    up4 = self.upscore_pool4(fuse)
    s3 = self.score_pool3(pool3)[:, :, 9:9 + up4.shape[2], 9:9 + up4.shape[3]]
    return self.upscore_final(up4 + s3)[:, :, 31:31 + height, 31:31 + width]


def build(name: str, *, num_classes: int, width: float) -> Optional[nn.Module]:
  """The PyTorch twin of seg_jax model ``name``, or None if there is none."""
  if name == "unet":
    return UNet(num_classes, width)
  if name in ("fcn32s", "fcn16s", "fcn8s"):
    return FCN(num_classes, name[3:], width)
  return None


def _median_seconds(fn: Callable[[], Any], steps: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_torch(name: str, *, batch: int, size: int, width: float, num_classes: int,
               steps: int, warmup: int = 2, threads: Optional[int] = None) -> dict:
  """Median train-step and inference seconds of the twin of ``name`` in PyTorch eager.

  ``threads`` defaults to the CPUs this process may run on (its affinity mask), which is
  what XLA's CPU thread pool uses too. Also returns this process's peak RSS in MB.
  """
  if steps < 1 or warmup < 1:
    raise ValueError(f"steps and warmup must be >= 1, got steps={steps}, warmup={warmup}")
  rss_start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports so far
  model = build(name, num_classes=num_classes, width=width)
  if model is None:
    raise ValueError(f"model {name!r} has no PyTorch twin; twins: unet, fcn32s, fcn16s, fcn8s")
  threads = threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  images = torch.randn(batch, 3, size, size)
  labels = torch.randint(0, num_classes, (batch, size, size))
  opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                        momentum=0.9)
  loss_fn = nn.CrossEntropyLoss()

  def step():
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    return loss.item()

  def infer():
    model.eval()
    with torch.no_grad():
      return model(images).argmax(1).sum().item()

  step_s = _median_seconds(step, steps, warmup)
  infer_s = _median_seconds(infer, steps, warmup)
  return {"step_s": step_s, "infer_s": infer_s,
          "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "rss_start_mb": rss_start_mb,
          "threads": threads, "torch": torch.__version__, "steps": steps, "warmup": warmup}
