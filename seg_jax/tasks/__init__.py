"""Tasks: the model-specific pieces the generic training loop needs.

``config.task`` names a module in this package (``semantic``, ``classification``,
``detection``, ``instance``); :func:`get_task` imports it. A task module is a plain module of functions
(no classes, no registry) that the loop and the pure steps in ``seg_jax.training.step`` call:

``init_variables(model, rng, batch) -> dict``
    Flax variables (``{'params': ..., 'batch_stats': ...}``) built from one batch of numpy
    arrays (the loop passes one example of the first training batch).

``loss_fn(model, params, batch_stats, batch, rng, config) -> (loss, (metrics, batch_stats))``
    Training-mode forward pass and scalar loss; ``metrics`` is a dict of scalars that are
    averaged across devices and logged; ``batch_stats`` is the updated BatchNorm state
    (return the input unchanged, e.g. ``{}``, when the model has none). Differentiated with
    respect to ``params``. ``rng`` is a ``jax.random.key`` (dropout, sampling). A task whose
    ``loss_fn`` also takes ``axis_name=None`` receives the pmap device axis and the undivided
    step key, and derives per-example keys itself (from global example indices, so pmap
    equals jit); otherwise the step folds the device index into ``rng``.

``eval_outputs(model, variables, batch, config) -> dict of arrays``
    Inference-mode statistics of one batch that are *summed* over batches, devices and
    hosts (the semantic task returns a confusion matrix). Padded examples of the last eval
    batch carry ``batch['valid'] == False`` (and ignore labels) and must not count.

``finalize_eval(summed, info, config) -> dict``
    Scores from the summed statistics (``info`` is ``seg_jax.data.dataset_info``); the
    loop logs every scalar entry and returns the dict from ``train_and_evaluate``.

``format_scores(scores, info) -> str``
    A human-readable table of the scores (printed after each evaluation).

``predict(model, variables, batch, config) -> array``
    Inference-mode predictions for a few examples (consumed only by ``overlays``).

``overlays(batch, predictions, info, config) -> list of (H, W', 3) uint8 images``
    Pictures of the predictions (image | ground truth | prediction) written as PNGs.

All functions except ``finalize_eval``, ``format_scores`` and ``overlays`` are traced
under ``jit``/``pmap`` and must be pure.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def task_names() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_task(name: str) -> ModuleType:
  """Imports ``seg_jax.tasks.<name>``."""
  if name not in task_names():
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
  return importlib.import_module(f"{__name__}.{name}")
