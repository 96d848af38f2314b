"""Device placement for the two parallelism modes, and multi-host start-up.

* ``jit``: one ``Mesh`` over all (global) devices with a ``'data'`` axis; batches are
  sharded on dim 0 (each process contributes its local slice through
  ``jax.make_array_from_process_local_data``), the state is replicated.
* ``pmap``: local batches are reshaped to ``(local_devices, per_device, ...)`` and the
  state carries a leading device axis.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
PMAP_AXIS = "batch"

_ENV_PREFIX = "SEG_JAX_"


def _setting(config, name: str):
  """Distributed setting from ``config.distributed.<name>`` or, when that is None or empty
  (or ``config`` is None), ``$SEG_JAX_<NAME>``."""
  value = None if config is None else config.distributed[name]
  if value in (None, ""):
    value = os.environ.get(_ENV_PREFIX + name.upper()) or None
  return value


def maybe_initialize_distributed(config) -> bool:
  """Calls ``jax.distributed.initialize`` when a coordinator address is configured.

  Settings come from ``config.distributed`` (``coordinator_address``, ``num_processes``,
  ``process_id``) or the environment (``SEG_JAX_COORDINATOR_ADDRESS``, ...). Returns True
  when this process is (now or already) part of a multi-process run.
  """
  address = _setting(config, "coordinator_address")
  if address is None:
    return jax.process_count() > 1
  from jax._src import distributed as _distributed  # pylint: disable=g-import-not-at-top
  if _distributed.global_state.client is not None:  # already initialised
    return True
  num_processes = _setting(config, "num_processes")
  process_id = _setting(config, "process_id")
  if num_processes is None or process_id is None:
    raise ValueError("distributed.coordinator_address is set but num_processes/process_id "
                     "are not")
  logging.info("jax.distributed.initialize(%s, %s, %s)", address, num_processes, process_id)
  jax.distributed.initialize(coordinator_address=str(address),
                             num_processes=int(num_processes), process_id=int(process_id))
  return True


def make_mesh(devices: Optional[list] = None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, parallelism: str) -> int:
  """Returns the per-process batch size; raises if devices cannot split the batch."""
  if isinstance(global_batch_size, bool) or not isinstance(global_batch_size,
                                                          (int, np.integer)):
    raise ValueError(f"batch_size must be an integer, got {global_batch_size!r}")
  if global_batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {global_batch_size}")
  num_devices = jax.device_count()
  if global_batch_size % num_devices:
    raise ValueError(f"batch_size {global_batch_size} is not divisible by the "
                     f"{num_devices} devices ({parallelism})")
  return global_batch_size // jax.process_count()


def put_global_batch(batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global arrays sharded over ``'data'`` on dim 0."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Replicates host (numpy or single-device) values over the mesh, on every process."""
  sharding = replicated_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                             lambda index, x=np.asarray(x): x[index]), tree)


def shard_for_pmap(batch: dict, count: Optional[int] = None) -> dict:
  """``(B_local, ...)`` -> ``(local_devices, B_local / local_devices, ...)``."""
  count = jax.local_device_count() if count is None else count
  return jax.tree.map(lambda x: np.asarray(x).reshape((count, -1) + np.shape(x)[1:]), batch)


def replicate_for_pmap(tree: Any, count: Optional[int] = None) -> Any:
  count = jax.local_device_count() if count is None else count
  return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (count,) + np.shape(x)), tree)


def unreplicate(tree: Any) -> Any:
  """First replica of a pmapped tree, as numpy."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x[0])), tree)


def to_host(tree: Any) -> Any:
  """Fully replicated global arrays -> numpy (reads this process's first shard)."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(fetch, tree)


class JitRunner:
  """Compiles the pure steps with ``jax.jit`` over a ``'data'`` mesh (the default).

  The state is replicated and donated; batches are sharded on dim 0. BatchNorm inside the
  model sees the global batch (the compiler inserts the cross-device reductions).
  """
  parallelism = "jit"
  bn_axis_name = None

  def __init__(self, train_fn, eval_fn, devices: Optional[list] = None):
    self.mesh = make_mesh(devices)
    replicated, data = replicated_sharding(self.mesh), data_sharding(self.mesh)
    self._train = jax.jit(train_fn, in_shardings=(replicated, data),
                          out_shardings=(replicated, replicated), donate_argnums=(0,))
    self._eval = jax.jit(eval_fn, in_shardings=(replicated, data), out_shardings=replicated)

  def place_state(self, host_state):
    return put_replicated(host_state, self.mesh)

  def place_batch(self, batch):
    return put_global_batch(batch, self.mesh)

  def train(self, state, batch):
    return self._train(state, batch)

  def eval(self, state, batch):
    return self._eval(state, batch)

  def host(self, tree):
    """Replicated device values (state, metrics, eval outputs) -> numpy."""
    return to_host(tree)

  def checkpointable(self, state):
    return state


class PmapRunner:
  """Compiles the pure steps with ``jax.pmap`` over the local devices (axis ``'batch'``).

  Gradients and metrics are ``pmean``-ed, eval statistics ``psum``-ed and BatchNorm uses
  ``bn_axis_name='batch'`` so its statistics are averaged over devices too.
  """
  parallelism = "pmap"
  bn_axis_name = PMAP_AXIS

  def __init__(self, train_fn, eval_fn, devices: Optional[list] = None):
    self.devices = devices
    self._count = jax.local_device_count() if devices is None else len(devices)
    self._train = jax.pmap(lambda s, b: train_fn(s, b, axis_name=PMAP_AXIS),
                           axis_name=PMAP_AXIS, donate_argnums=(0,), devices=devices)
    self._eval = jax.pmap(lambda s, b: eval_fn(s, b, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
                          devices=devices)

  def place_state(self, host_state):
    return replicate_for_pmap(host_state, self._count)

  def place_batch(self, batch):
    return shard_for_pmap(batch, self._count)

  def train(self, state, batch):
    return self._train(state, batch)

  def eval(self, state, batch):
    return self._eval(state, batch)

  def host(self, tree):
    return unreplicate(tree)

  def checkpointable(self, state):
    return unreplicate(state)


def make_runner(parallelism: str, train_fn, eval_fn, devices: Optional[list] = None):
  """``train_fn(state, batch, axis_name=None)`` / ``eval_fn`` -> a runner for ``parallelism``."""
  if parallelism == "jit":
    return JitRunner(train_fn, eval_fn, devices)
  if parallelism == "pmap":
    return PmapRunner(train_fn, eval_fn, devices)
  raise ValueError(f"unknown parallelism {parallelism!r}; use 'jit' or 'pmap'")
