"""Training: state, pure steps, sharding (jit/pmap, multi-host), optimizers, checkpoints, loop.

Entry points: ``train_and_evaluate(config, workdir)`` and ``evaluate(config, workdir)``
(resolved lazily so importing ``seg_jax.training`` does not import TensorFlow or orbax);
configs start from ``base_config(data_name, task)``, which defines every field they read.
"""

import importlib

_EXPORTS = {
    "train_and_evaluate": "loop",
    "evaluate": "loop",
    "NonFiniteLossError": "loop",
    "TrainState": "state",
    "create_train_state": "state",
    "train_step": "step",
    "eval_step": "step",
    "create_optimizer": "optim",
    "Checkpointer": "checkpoint",
    "base_config": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  module_name = _EXPORTS.get(name)
  if module_name is None:
    raise AttributeError(f"module 'seg_jax.training' has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{module_name}"), name)


def __dir__():
  return __all__
