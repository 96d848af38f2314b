"""The training state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Parameters, BatchNorm statistics, optimizer state, step counter and base RNG.

  ``rng`` is raw ``uint32`` key data (``jax.random.key_data``) so the state checkpoints
  like any array; :func:`step_rng` derives the per-step key ``fold_in(rng, step)``, which
  makes a resumed run draw exactly the keys an uninterrupted one would.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array

  @property
  def variables(self) -> dict:
    """Flax variables for inference (``params`` plus ``batch_stats`` when present)."""
    variables = {"params": self.params}
    if jax.tree_util.tree_leaves(self.batch_stats):
      variables["batch_stats"] = self.batch_stats
    return variables


def step_rng(state: TrainState) -> jax.Array:
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def create_train_state(task, model, tx: optax.GradientTransformation, rng: jax.Array,
                       batch) -> TrainState:
  """Initialises variables with ``task.init_variables`` and the optimizer state.

  ``rng`` is a ``jax.random.key``; pure, so it can be jitted with output shardings.
  """
  init_rng, state_rng = jax.random.split(rng)
  variables = dict(task.init_variables(model, init_rng, batch))
  params = variables.pop("params")
  batch_stats = variables.pop("batch_stats", {})
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng))
