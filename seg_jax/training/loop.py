"""``train_and_evaluate(config, workdir)``: the training loop, and ``evaluate(config, workdir)``.

The loop is generic; everything model-specific comes from the task module named by
``config.task`` (see ``seg_jax.tasks``). Outputs in ``workdir``: ``config.json``,
``metrics.jsonl`` (one JSON line per log step and per evaluation), ``tensorboard/``,
``checkpoints/<step>/`` and ``overlays/*.png``.

Resuming: if ``workdir/checkpoints`` holds a checkpoint the run continues from it, and the
training iterator is advanced past the batches already consumed, so a resumed run sees the
same batches and per-step random keys as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import math
import os
import time
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from seg_jax import charts
from seg_jax import data as data_lib
from seg_jax import models, tasks
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import init_weights as init_lib
from seg_jax.training import logging as log_lib
from seg_jax.training import optim, sharding, step as step_lib
from seg_jax.training import workdir as workdir_lib
from seg_jax.training.state import TrainState, create_train_state


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss or the parameters become NaN or infinite."""


# Exit code of a training run stopped by SIGTERM after saving a checkpoint (sysexits.h
# EX_TEMPFAIL: "try again later"), so a scheduler can tell preemption from completion.
PREEMPTED_EXIT_CODE = 75


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_model(config, num_classes: int, bn_axis_name: Optional[str] = None):
  """The model named by ``config.model.name`` with the other ``config.model`` fields.

  A name of the form ``package.module:Class`` imports that class instead of using the
  ``seg_jax.models`` table (handy for tests and experiments with local models).
  ``num_classes`` is filled in from the dataset; ``config.dtype`` sets the compute dtype
  (parameters stay float32).
  """
  kwargs = dict(config.model)
  name = kwargs.pop("name")
  kwargs.setdefault("num_classes", num_classes)
  if ":" in name:
    module_name, class_name = name.split(":")
    model = getattr(importlib.import_module(module_name), class_name)(**kwargs)
  else:
    model = models.get_model(name, **kwargs)
  fields = {f.name for f in dataclasses.fields(model)}
  dtype_name = config.dtype
  if dtype_name not in _DTYPES:
    raise ValueError(f"unknown dtype {dtype_name!r}; use one of {', '.join(_DTYPES)}")
  if dtype_name != "float32":
    if "dtype" not in fields:
      raise ValueError(f"model {name!r} has no dtype field, cannot use dtype={dtype_name}")
    model = model.clone(dtype=_DTYPES[dtype_name])
  if bn_axis_name is not None and "bn_axis_name" in fields:
    model = model.clone(bn_axis_name=bn_axis_name)
  return model


class _Setup:
  """Everything built from the config once: data info, model, task, optimizer, runner."""

  def __init__(self, config):
    sharding.maybe_initialize_distributed(config)
    self.config = config
    parallelism = config.parallelism
    # Checked first: a bad batch size fails in a second, not after the dataset is built.
    self.batch_size = config.batch_size
    self.local_batch_size = sharding.check_batch_size(self.batch_size, parallelism)
    self.info = data_lib.dataset_info(config.data)
    self.task = tasks.get_task(config.task)
    bn_axis = sharding.PMAP_AXIS if parallelism == "pmap" else None
    self.model = build_model(config, int(self.info["num_classes"]), bn_axis)
    self.tx, self.schedule = optim.create_optimizer(config)
    common = dict(task=self.task, model=self.model, config=config)
    self.runner = sharding.make_runner(
        parallelism, functools.partial(step_lib.train_step, tx=self.tx, **common),
        functools.partial(step_lib.eval_step, **common))
    self._predict = jax.jit(
        lambda variables, batch: self.task.predict(self.model, variables, batch, config))

  def dataset(self, split: str, train: bool) -> Iterator[dict]:
    return data_lib.get_dataset(
        self.config.data, split=split, train=train, global_batch_size=self.batch_size,
        seed=int(self.config.seed), process_index=jax.process_index(),
        process_count=jax.process_count())

  def fresh_state(self, batch: dict) -> TrainState:
    """Randomly initialised host state (identical on every process: it depends on the seed)."""
    example = jax.tree.map(lambda x: np.zeros_like(np.asarray(x)[:1]), batch)
    create = jax.jit(functools.partial(create_train_state, self.task, self.model, self.tx))
    return jax.device_get(create(jax.random.key(int(self.config.seed)), example))

  def init_state(self, batch: dict) -> TrainState:
    """Initial state (identical on every process: it depends on the seed only)."""
    state = self.fresh_state(batch)
    if self.config.init_weights:
      params, batch_stats = init_lib.load_init_weights(self.config, state.params,
                                                        state.batch_stats)
      state = state.replace(params=params, batch_stats=batch_stats,
                            opt_state=self.tx.init(params))
    return self.runner.place_state(state)

  def evaluate(self, state, step: int, writer: log_lib.MetricWriter) -> dict:
    """One full pass over the eval split; prints and logs the scores."""
    config, start = self.config, time.time()
    split = config.data.eval_split
    # Every process must run the same number of eval steps (they are collective). The
    # pipeline already pads shards to equal counts; as a safeguard a process that runs out
    # early contributes all-padding batches up to the count implied by the split size.
    minimum = _num_eval_batches(self.info, split, self.local_batch_size)
    batches = self.dataset(split, train=False)
    if minimum is not None:
      batches = itertools.chain(batches, itertools.repeat(None))
    total, first, template, count = None, None, None, 0
    for batch in batches:
      if batch is None:
        if count >= minimum:
          break
        batch = _padding_batch(template, int(config.data.ignore_label))
      template, count = batch, count + 1
      first = batch if first is None else first
      outputs = self.runner.host(self.runner.eval(state, self.runner.place_batch(batch)))
      outputs = jax.tree.map(lambda x: np.asarray(x, np.int64 if np.issubdtype(
          np.asarray(x).dtype, np.integer) else np.float64), outputs)
      total = outputs if total is None else jax.tree.map(np.add, total, outputs)
    if total is None:
      raise ValueError(f"eval split {split!r} produced no batches")
    scores = self.task.finalize_eval(total, self.info, config)
    elapsed = time.time() - start
    if jax.process_index() == 0:
      table = self.task.format_scores(scores, self.info)
      print(f"\nevaluation at step {step} on {split!r} ({elapsed:.1f}s):\n{table}\n", flush=True)
      writer.write(step, "eval", {**scores, "eval_seconds": elapsed})
      writer.write_text(step, "eval/table", table)
      self._write_overlays(state, first, step, writer)
    return scores

  def _write_overlays(self, state, batch, step, writer) -> None:
    count = int(self.config.num_overlays or 0)
    if count <= 0 or batch is None:
      return
    if "valid" in batch:
      count = min(count, int(np.sum(batch["valid"])))
    if count <= 0:
      return
    small = jax.tree.map(lambda x: np.asarray(x)[:count], batch)
    variables = self.runner.host(state.variables)
    predictions = jax.tree.map(np.asarray, self._predict(variables, small))  # array or dict
    writer.write_images(step, "eval", self.task.overlays(small, predictions, self.info,
                                                         self.config))


def _num_eval_batches(info: dict, split: str, local_batch_size: int) -> Optional[int]:
  """Minimum eval batches per process in a multi-process run (None: single process)."""
  count = (info.get("num_examples") or {}).get(split)
  if jax.process_count() == 1 or count is None:
    return None
  per_process = math.ceil(int(count) / jax.process_count())
  return max(math.ceil(per_process / local_batch_size), 1)


def _padding_batch(template: Optional[dict], ignore_label: int) -> dict:
  if template is None:
    raise ValueError("eval iterator produced no batch on this process")
  batch = {k: np.zeros_like(v) for k, v in template.items()}
  if "label" in batch:
    batch["label"] = np.full_like(template["label"], ignore_label)
  batch["valid"] = np.zeros(np.shape(template["image"])[0], bool)
  return batch


def _write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _check_finite(metrics: list[dict], first_step: int, last_checkpoint=None) -> None:
  for offset, values in enumerate(metrics):
    if not np.isfinite(values["loss"]):
      raise NonFiniteLossError(f"non-finite loss at step {first_step + offset}"
                               + _last_checkpoint_hint(last_checkpoint))


def _last_checkpoint_hint(step) -> str:
  return "" if step is None else f" (last healthy checkpoint: {step})"


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _check_finite_state(state, step: int, last_checkpoint=None) -> None:
  """Parameters and BatchNorm statistics must be finite before they are checkpointed: the
  loss of a step is computed before its update, so it cannot see a NaN the update made."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if not bool(sharding.to_host(_all_finite(variables))):
    raise NonFiniteLossError(f"non-finite parameters after step {step}; not checkpointed"
                             + _last_checkpoint_hint(last_checkpoint))


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains ``config.num_train_steps`` steps in ``workdir``; returns the final eval scores.

  Evaluates every ``config.eval_every`` steps and at the end, checkpoints every
  ``config.checkpoint_every`` steps and at the end, resumes from the newest readable
  checkpoint (see ``checkpoint.restore_latest_readable``). The workdir is locked for the
  run (``workdir.WorkdirLock``). On SIGTERM it checkpoints and returns
  ``{'preempted_at_step': step}`` (the train CLI then exits with ``PREEMPTED_EXIT_CODE``).
  """
  sharding.maybe_initialize_distributed(config)  # before jax.process_index() is read
  is_main = jax.process_index() == 0
  if is_main:  # as prepare() below: the other processes share process 0's directory
    workdir_lib.check_usable(workdir)
  # The initial state (with ``init_weights`` loaded and checked against the model) is built
  # before the workdir is touched: a run refused here leaves nothing behind.
  setup = _Setup(config)
  train_iter = setup.dataset(config.data.train_split, train=True)
  first = next(train_iter)
  state = setup.init_state(first)
  train_iter = itertools.chain([first], train_iter)
  workdir = workdir_lib.prepare(workdir) if is_main else os.path.abspath(workdir)
  # Process 0 locks; the other processes of a multi-process run share the directory.
  lock = workdir_lib.WorkdirLock(workdir).acquire() if is_main else None
  try:
    directory = os.path.join(workdir, "checkpoints")
    if is_main:
      for name in workdir_lib.clean_temporary_checkpoints(directory):
        logging.warning("removed unfinished checkpoint %s", name)
    _write_config(config, workdir)
    checkpointer = checkpoint_lib.Checkpointer(
        directory, save_every=config.checkpoint_every, keep=config.keep_checkpoints)
    stop = checkpoint_lib.StopSignal()
    try:
      scores = _train(setup, config, workdir, checkpointer, stop, state, train_iter)
    finally:
      stop.restore_handlers()
      checkpointer.close()
    if is_main:
      _plot_curves(workdir)
    return scores
  finally:
    if lock is not None:
      lock.release()


def _plot_curves(workdir: str) -> None:
  """``curves.png``: loss and eval curves of ``metrics.jsonl`` (as ``experiments.plot``)."""
  try:
    charts.plot_metrics(log_lib.read_metrics(workdir), os.path.join(workdir, "curves.png"),
                        title=os.path.basename(workdir))
  except ValueError as error:  # no metric worth a panel yet (e.g. a zero-step run)
    logging.warning("no curves.png: %s", error)


def _train(setup: _Setup, config, workdir: str, checkpointer, stop, state,
           train_iter) -> dict[str, Any]:
  """Resumes ``state`` (the initial state) from the newest readable checkpoint if any, then
  trains; ``train_iter`` starts at step 0's batch."""
  num_steps = int(config.num_train_steps)
  is_main = jax.process_index() == 0
  start, state = checkpointer.restore_latest_readable(
      setup.runner.checkpointable(state),
      quarantine=os.path.join(workdir, "unreadable_checkpoints") if is_main else None)
  start = start or 0
  if start:
    if setup.runner.parallelism == "pmap":
      state = setup.runner.place_state(state)
    print(f"resumed from step {start} (checkpoints in {checkpointer.directory})", flush=True)
    for _ in range(start):  # replay the input pipeline to the batch of step `start`
      next(train_iter)
  if is_main:  # records after the resumed step are written again
    workdir_lib.truncate_metrics(workdir, start, rewrite_eval_at_step=start >= num_steps)
  writer = log_lib.MetricWriter(workdir, enabled=is_main)
  try:
    return _train_steps(setup, config, writer, checkpointer, stop, state, train_iter, start)
  finally:
    writer.close()


def _train_steps(setup: _Setup, config, writer, checkpointer, stop, state, train_iter,
                 start: int) -> dict[str, Any]:
  num_steps = int(config.num_train_steps)
  log_every = max(int(config.log_every or 1), 1)
  eval_every = int(config.eval_every or 0)  # 0: only at the end
  checkpoint_every = max(int(config.checkpoint_every or num_steps), 1)  # 0: only at the end
  last_checkpoint = start or None
  progress = _progress_bar(num_steps, start, enabled=jax.process_index() == 0)
  pending, pending_start, last_time = [], start, time.time()
  for step in range(start, num_steps):
    batch = next(train_iter)
    state, metrics = setup.runner.train(state, setup.runner.place_batch(batch))
    pending.append(metrics)
    done = step + 1
    preempted = stop.requested or (jax.process_count() > 1 and
                                   checkpointer.reached_preemption(done))
    checkpoint_due = done % checkpoint_every == 0 or done == num_steps or preempted
    if done % log_every == 0 or checkpoint_due or done == num_steps:
      host_metrics = [setup.runner.host(m) for m in pending]
      _check_finite(host_metrics, pending_start + 1, last_checkpoint)
      now = time.time()
      summary = {k: float(np.mean([m[k] for m in host_metrics])) for k in host_metrics[0]}
      summary["learning_rate"] = float(setup.schedule(done - 1))
      summary["steps_per_second"] = len(host_metrics) / max(now - last_time, 1e-9)
      writer.write(done, "train", summary)
      if progress is not None:
        progress.set_postfix(loss=f"{summary['loss']:.4f}", refresh=False)
      pending, pending_start, last_time = [], done, now
    if progress is not None:
      progress.update(1)
    if checkpoint_due:  # the step's own loss was checked above; now the parameters
      _check_finite_state(state, done, last_checkpoint)
      checkpointer.save(done, setup.runner.checkpointable(state), force=True)
      last_checkpoint = done
    if preempted:
      if progress is not None:
        progress.close()
      logging.warning("stopping at step %d on request (checkpoint saved)", done)
      return {"preempted_at_step": done}
    if eval_every and done % eval_every == 0 and done != num_steps:
      setup.evaluate(state, done, writer)
      last_time = time.time()
  if progress is not None:
    progress.close()
  return setup.evaluate(state, max(start, num_steps), writer)


def _progress_bar(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  try:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
              mininterval=1.0)


def evaluate(config, workdir: str, step: Optional[int] = None) -> dict[str, Any]:
  """Restores the newest readable (or ``step``) checkpoint from ``workdir`` and evaluates it.

  Only the parameters and BatchNorm statistics are read (not the optimizer state), and
  nothing in the checkpoint directory is changed (a run may be writing to it).
  """
  workdir = os.path.abspath(workdir)
  directory = os.path.join(workdir, "checkpoints")
  if not checkpoint_lib.saved_steps(directory):
    raise checkpoint_lib.CheckpointError(f"no checkpoints in {directory}")
  if step is not None:  # before the (slow) set-up
    checkpoint_lib.check_step(directory, step)
  setup = _Setup(config)
  first = next(setup.dataset(config.data.eval_split, train=False))
  state = setup.fresh_state(first)
  step, variables = checkpoint_lib.restore_variables(
      directory, step, template={"params": state.params, "batch_stats": state.batch_stats})
  state = setup.runner.place_state(state.replace(**variables))
  writer = log_lib.MetricWriter(workdir, enabled=jax.process_index() == 0)
  try:
    return setup.evaluate(state, step, writer)
  finally:
    writer.close()


def predict_eval_split(config, workdir: str,
                       step: Optional[int] = None) -> tuple[int, Iterator[tuple[dict, Any]]]:
  """Restores ``workdir``'s newest readable (or ``step``) checkpoint and returns ``(step,
  iterator of (batch, predictions))`` numpy pairs over ``config.data.eval_split``.

  Predictions are the task's ``predict`` outputs on each whole batch (one process; used by
  ``seg_jax.coco_eval`` to write official results files), given the image and, when the
  batch has it, ``pad_mask`` (DETR attends to the content only and makes its boxes relative
  to it, as in training and in-training evaluation).
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not checkpoint_lib.saved_steps(directory):
    raise checkpoint_lib.CheckpointError(f"no checkpoints in {directory}")
  if step is not None:
    checkpoint_lib.check_step(directory, step)
  setup = _Setup(config)
  batches = setup.dataset(config.data.eval_split, train=False)
  first = next(batches)
  state = setup.fresh_state(first)
  step, variables = checkpoint_lib.restore_variables(
      directory, step, template={"params": state.params, "batch_stats": state.batch_stats})

  def pairs():
    for batch in itertools.chain([first], batches):
      inputs = {k: batch[k] for k in ("image", "pad_mask") if k in batch}
      predictions = setup._predict(variables, inputs)
      yield batch, jax.tree.map(np.asarray, predictions)

  return step, pairs()
