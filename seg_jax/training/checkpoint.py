"""Checkpoints with orbax (the only module that imports it).

``workdir/checkpoints/<step>/`` directories are written by ``orbax.checkpoint.CheckpointManager``
into a temporary directory and renamed when complete, so an interrupted save never leaves a
directory that looks finished (and unfinished ones are cleaned up at the next start).

Restoring validates what it reads. A finished checkpoint can still be unreadable (a data
file truncated or deleted, ``_METADATA`` or ``default/`` missing): then
:func:`restore_latest_readable` / :func:`restore_variables` warn in one line
(``checkpoint 300 is unreadable (...); falling back to 250``) and use the newest readable
one, and a one-line :class:`UnreadableCheckpointError` says so when none is readable. A
checkpoint that reads fine but does not fit the model raises :class:`CheckpointMismatchError`
naming the layer and both shapes (no fallback: older checkpoints of the run would not fit
either).
"""

from __future__ import annotations

import logging as std_logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

ITEM = "default"  # the item name orbax gives a single StandardSave
VARIABLES = ("params", "batch_stats")


class CheckpointError(ValueError):
  """A checkpoint cannot be used; the message is one line."""


class UnreadableCheckpointError(CheckpointError):
  """The files of a checkpoint are missing or damaged."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint is readable but its tree does not fit the model/optimizer."""


class _EventLoopNoise(std_logging.Filter):
  """Drops asyncio's 'Event loop is closed' reports that tensorstore reads leave behind
  after a failed restore: they hide the real error."""

  def filter(self, record):
    return "Event loop is closed" not in record.getMessage()


def _quiet_unraisable(hook):
  def quiet(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
        unraisable.exc_value):
      return
    hook(unraisable)
  quiet.seg_jax_quiet = True
  return quiet


std_logging.getLogger("asyncio").addFilter(_EventLoopNoise())
if not getattr(sys.unraisablehook, "seg_jax_quiet", False):
  sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


def describe_error(error: BaseException, limit: int = 320) -> str:
  """The root cause of an orbax/tensorstore error as one short line.

  Orbax wraps tensorstore's message (which names the file and byte range) in an exception
  whose own text is a 2,000-character spec dump; the innermost cause is the useful part.
  """
  seen = set()
  while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
  if isinstance(error, CheckpointError) and lines:  # our own message says it all
    text = lines[0]
  return text if len(text) <= limit else text[:limit - 3] + "..."


def saved_steps(directory: str) -> list[int]:
  """Steps of the finished checkpoints in ``directory`` (ascending), without touching it.

  Orbax writes ``<step>.orbax-checkpoint-tmp-*`` and renames it to ``<step>`` when the save
  is complete, so exactly the all-digit names are finished checkpoints.
  """
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def _item_path(directory: str, step: int) -> str:
  path = os.path.join(directory, str(step), ITEM)
  if not os.path.isdir(path):
    raise UnreadableCheckpointError(f"{ITEM}/ is missing")
  if not os.path.exists(os.path.join(path, "_METADATA")):
    raise UnreadableCheckpointError(f"{ITEM}/_METADATA is missing")
  return path


def saved_tree(directory: str, step: int) -> dict:
  """The saved tree of ``step`` as nested dicts of orbax ``ArrayMetadata`` (shape, dtype)."""
  # The handler, not a Checkpointer: the latter warns about the step-level metadata file.
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(_item_path(directory, step)))
  finally:
    handler.close()
  return dict(getattr(metadata, "tree", metadata))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """Nested mappings -> ``{'a/b/c': leaf}`` (empty mappings vanish)."""
  if hasattr(tree, "items"):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}/"))
    return out
  return {prefix.rstrip("/"): tree}


def check_fits(saved: dict, template: dict, *, step: int,
               collections: Sequence[str] = VARIABLES) -> None:
  """Raises :class:`CheckpointMismatchError` naming the first layer whose path or shape
  differs between the saved tree and ``template`` (both ``{'params': ..., ...}``)."""
  for collection in collections:
    have = _flat(saved.get(collection) or {}, f"{collection}/")
    want = _flat(template.get(collection) or {}, f"{collection}/")
    for path, leaf in want.items():
      if path not in have:
        raise CheckpointMismatchError(
            f"checkpoint {step} does not fit the model: {path} {tuple(np.shape(leaf))} is not "
            f"in the checkpoint (it has {_layer_names(have)})")
      if tuple(have[path].shape) != tuple(np.shape(leaf)):
        raise CheckpointMismatchError(
            f"checkpoint {step} does not fit the model: {path} has shape "
            f"{tuple(have[path].shape)} in the checkpoint, the model expects "
            f"{tuple(np.shape(leaf))}")
    extra = sorted(set(have) - set(want))
    if extra:
      raise CheckpointMismatchError(
          f"checkpoint {step} does not fit the model: {extra[0]} {tuple(have[extra[0]].shape)} "
          f"is in the checkpoint but not in the model ({len(extra)} such arrays)")


def _layer_names(flat: dict) -> str:
  layers = sorted({path.split("/")[1] for path in flat if path.count("/") >= 1})
  return ", ".join(layers[:6]) + (", ..." if len(layers) > 6 else "") if layers else "none"


def _restore_variables_at(directory: str, step: int, template: Optional[dict],
                          collections: Sequence[str]) -> dict:
  saved = saved_tree(directory, step)
  if template is not None:
    check_fits(saved, template, step=step, collections=collections)
  present = {c: saved[c] for c in collections if c in saved and _flat(saved[c])}
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), present)
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray), abstract)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    restored = handler.restore(
        epath.Path(_item_path(directory, step)),
        args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                    partial_restore=True))
  finally:
    handler.close()
  out = {c: _to_dicts(restored.get(c, {})) for c in collections}
  if template is not None:  # the model's dtypes (the checkpoint stores float32 anyway)
    out = {c: jax.tree.map(lambda v, t: np.asarray(v, np.asarray(t).dtype), out[c],
                           _to_dicts(template.get(c) or {})) for c in collections}
  return out


def _to_dicts(tree: Any) -> Any:
  if hasattr(tree, "items"):
    return {k: _to_dicts(v) for k, v in tree.items()}
  return np.asarray(tree)


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr, flush=True)


def _newest_readable(directory: str, steps: list[int], restore_one) -> tuple[int, Any, list]:
  """Tries ``steps`` newest first; returns (step, restored, [(bad step, reason), ...])."""
  bad = []
  ordered = sorted(steps, reverse=True)
  for index, step in enumerate(ordered):
    try:
      return step, restore_one(step), bad
    except CheckpointMismatchError:
      raise
    except Exception as error:  # pylint: disable=broad-except  # any read failure: try older
      reason = describe_error(error)
      bad.append((step, reason))
      older = ordered[index + 1] if index + 1 < len(ordered) else None
      _warn(f"checkpoint {step} is unreadable ({reason}); " +
            (f"falling back to {older}" if older is not None else "no older checkpoint"))
  reasons = "; ".join(f"{step}: {reason}" for step, reason in bad)
  raise UnreadableCheckpointError(f"no readable checkpoint in {directory} ({reasons})")


def check_step(directory: str, step: int, steps: Optional[list[int]] = None) -> None:
  """Raises a one-line CheckpointError unless ``step`` is a finished checkpoint."""
  steps = saved_steps(directory) if steps is None else steps
  if not steps:
    raise CheckpointError(f"no checkpoints in {directory}")
  if step not in steps:
    raise CheckpointError(f"step {step} is not a saved checkpoint in {directory}; saved steps: "
                          f"{', '.join(map(str, steps))}")


def restore_variables(directory: str, step: Optional[int] = None, template: Optional[dict] = None,
                      collections: Sequence[str] = VARIABLES) -> tuple[int, dict]:
  """Reads only ``collections`` (params, batch stats; never the optimizer state).

  ``step=None``: the newest readable checkpoint (older ones after a one-line warning);
  an explicit ``step`` must exist and be readable. With a ``template``
  (``{'params': ..., 'batch_stats': ...}``) the saved shapes are checked against it first.
  Returns ``(step, {collection: nested dicts of numpy arrays})``.
  """
  directory = os.path.abspath(directory)
  steps = saved_steps(directory)
  restore_one = lambda s: _restore_variables_at(directory, s, template, collections)
  if step is not None:
    check_step(directory, step, steps)
    try:
      return step, restore_one(step)
    except CheckpointMismatchError:
      raise
    except Exception as error:  # pylint: disable=broad-except
      raise UnreadableCheckpointError(
          f"checkpoint {step} in {directory} is unreadable ({describe_error(error)})") from error
  if not steps:
    raise CheckpointError(f"no checkpoints in {directory}")
  step, variables, _ = _newest_readable(directory, steps, restore_one)
  return step, variables


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

    Without a template the saved tree is returned as nested dicts of arrays. No fallback:
    see :meth:`restore_latest_readable`.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint to restore in {self.directory}")
    if template is not None:  # path/shape errors as one line, before orbax's tree errors
      saved = saved_tree(self.directory, step)
      check_fits(saved, _to_mapping(template), step=step)
      have, want = len(jax.tree.leaves(saved)), len(jax.tree.leaves(template))
      if have != want:
        raise CheckpointMismatchError(
            f"checkpoint {step} does not fit: it holds {have} arrays, the training state "
            f"{want} (another optimizer or schedule?)")
    abstract = None if template is None else jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                          template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest_readable(self, template: Any,
                              quarantine: Optional[str] = None) -> tuple[Optional[int], Any]:
    """``(step, state)`` of the newest checkpoint that restores into ``template``.

    ``(None, template)`` when there is no checkpoint. Unreadable newer checkpoints are
    skipped with a one-line warning each and, with ``quarantine`` (a directory), moved
    there so the run can save those steps again. None readable: UnreadableCheckpointError.
    """
    steps = self.all_steps()
    if not steps:
      return None, template
    step, state, bad = _newest_readable(self.directory, steps,
                                        lambda s: self.restore(template, s))
    if quarantine and bad:
      os.makedirs(quarantine, exist_ok=True)
      for bad_step, _ in bad:
        target = os.path.join(quarantine, str(bad_step))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(os.path.join(self.directory, str(bad_step)), target)
      _warn(f"moved unreadable checkpoint(s) {', '.join(str(s) for s, _ in bad)} to {quarantine}")
      self._manager.reload()
    return step, state

  def reached_preemption(self, step: int) -> bool:
    """Multi-host preemption notice agreed by all processes (orbax/JAX sync manager)."""
    return bool(self._manager.reached_preemption(step))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _to_mapping(state: Any) -> dict:
  """A TrainState (flax struct) or mapping -> ``{'params': ..., 'batch_stats': ...}``."""
  if hasattr(state, "items"):
    return dict(state.items())
  return {c: getattr(state, c) for c in VARIABLES if hasattr(state, c)}


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
