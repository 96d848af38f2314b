"""One PyTorch round of ``experiments.benchmark`` (its worker process; prints one JSON line).

``python -m experiments.benchmark_torch --model=unet [--batch=4 --size=128 --width=0.5
--num_classes=21 --steps=5 --warmup=2]`` in an environment with torch: times the twin of
the model in ``seg_jax/benchmarks/torch_reference.py`` in eager mode
(:func:`~seg_jax.benchmarks.torch_reference.time_torch`). JAX is never imported here, so
the peak RSS is PyTorch's own.
"""

import json

from absl import app, flags

from experiments import cli, configs
from seg_jax.benchmarks import torch_reference

_MODEL = flags.DEFINE_string("model", "unet", "unet, fcn32s, fcn16s or fcn8s.")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image side.")
_WIDTH = flags.DEFINE_float("width", 0.5, "Channel multiplier (U-Net 0.5 = 32 base features).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 21, "Output classes.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_THREADS = flags.DEFINE_integer("threads", 0, "torch threads (0: the CPUs of the affinity mask).")


def main(argv):
  configs.start_cli(argv)
  for name, flag in (("batch", _BATCH), ("size", _SIZE), ("num_classes", _NUM_CLASSES)):
    if flag.value < 1:
      cli.fail(f"--{name} must be >= 1, got {flag.value}")
  result = torch_reference.time_torch(
      _MODEL.value, batch=_BATCH.value, size=_SIZE.value, width=_WIDTH.value,
      num_classes=_NUM_CLASSES.value, steps=_STEPS.value, warmup=_WARMUP.value,
      threads=_THREADS.value or None)
  print(json.dumps({"model": _MODEL.value, **result}), flush=True)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
