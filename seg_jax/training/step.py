"""Pure train and eval steps (no jit inside: the loop chooses jit or pmap).

With ``axis_name`` set (the ``pmap`` path) gradients, metrics and BatchNorm statistics are
averaged over that device axis and eval statistics summed; under ``jit`` with a sharded
batch the compiler does the equivalent reductions over the global batch by itself.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from seg_jax.training.state import TrainState, step_rng


def train_step(state: TrainState, batch: dict, *, task, model, tx: optax.GradientTransformation,
               config, axis_name: Optional[str] = None) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer update; returns the new state and scalar metrics (``loss``, ...)."""
  rng = step_rng(state)
  loss_fn = task.loss_fn
  if "axis_name" in inspect.signature(loss_fn).parameters:
    # The task gets the step key and the device axis and derives per-device/per-example
    # keys itself (e.g. from global example indices, so pmap equals jit).
    loss_fn = functools.partial(loss_fn, axis_name=axis_name)
  elif axis_name is not None:
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))  # distinct dropout per device

  def objective(params):
    return loss_fn(model, params, state.batch_stats, batch, rng, config)

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  metrics = {"loss": loss, **metrics}
  if axis_name is not None:
    grads = lax.pmean(grads, axis_name)
    metrics = lax.pmean(metrics, axis_name)
    batch_stats = lax.pmean(batch_stats, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.global_norm(grads)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, task, model, config,
              axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """Summable evaluation statistics of one batch (summed over ``axis_name`` if given)."""
  outputs = task.eval_outputs(model, state.variables, batch, config)
  if axis_name is not None:
    outputs = lax.psum(outputs, axis_name)
  return outputs

