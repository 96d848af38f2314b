"""Checkpoints with orbax (the only module that imports it).

``workdir/checkpoints/<step>/`` directories are written by ``orbax.checkpoint.CheckpointManager``
into a temporary directory and renamed when complete, so an interrupted save never leaves a
directory that looks finished (and unfinished ones are cleaned up at the next start).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Save every ``save_every`` steps (and when forced), keep the last ``keep``, restore latest."""

  def __init__(self, directory: str, *, save_every: int, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max(int(keep), 1), save_interval_steps=max(int(save_every), 1), create=True,
        cleanup_tmp_directories=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves ``state`` at ``step`` if due (or ``force``); returns whether it saved."""
    if step in self._manager.all_steps():
      return False
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved:
      self._manager.wait_until_finished()
      logging.info("saved checkpoint at step %d in %s", step, self.directory)
    return bool(saved)

  def restore(self, template: Any = None, step: Optional[int] = None) -> Any:
    """Restores ``step`` (default: latest) into arrays shaped/sharded like ``template``.

    Without a template the saved tree is returned as nested dicts of arrays.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoint to restore in {self.directory}")
    abstract = None if template is None else jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                          template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def reached_preemption(self, step: int) -> bool:
    """Multi-host preemption notice agreed by all processes (orbax/JAX sync manager)."""
    return bool(self._manager.reached_preemption(step))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class StopSignal:
  """Turns SIGTERM (and optionally SIGINT) into a flag the loop polls between steps.

  The loop then saves a checkpoint and returns instead of dying mid-step. The previous
  handlers are restored by :meth:`restore_handlers`. Only installed on the main thread.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self.requested = False
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: will checkpoint and stop after this step", signum)
    self.requested = True

  def restore_handlers(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
