"""Optax optimizers and learning-rate schedules from a config.

``config.optimizer``: ``name`` ('sgd' | 'momentum' | 'adam' | 'adamw'), ``learning_rate``,
``momentum`` (sgd: 0 = plain SGD; 'momentum' is SGD that requires it > 0), ``nesterov``,
``b1``, ``b2``, ``eps``, ``weight_decay``, ``decay_all`` (False: no decay on biases and
normalisation parameters, i.e. on parameters with ndim <= 1),
``grad_clip_norm`` (clip by global norm; 0/None = off), ``lr_multipliers`` (a
``{path regex: multiplier}`` dict matched with ``re.search`` against 'a/b/kernel' paths,
first match wins; multiplier 0 freezes the parameter: ``optax.set_to_zero`` and no
optimizer state).

``config.schedule``: ``name`` ('constant' | 'cosine' | 'warmup_cosine' | 'poly' | 'steps'),
``warmup_steps``, ``end_value`` (fraction of the base rate at the end), ``power`` (poly,
0.9 as in DeepLab). Decay runs over ``config.num_train_steps``. ``steps`` (the Detectron
recipe) multiplies the rate by ``decay_factor`` (0.1) at each of ``boundaries`` (absolute
steps, warmup included).

Every field is defined, with its default, by ``seg_jax.training.config.base_config``.
SGD and Adam use coupled (L2) weight decay added to the gradient, as in the FCN/SegNet
Caffe recipes; AdamW uses decoupled decay.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[Any], jax.Array]


def make_schedule(schedule_config, base_lr: float, total_steps: int) -> Schedule:
  """The learning rate per step from a ``schedule`` section (all fields as in base_config)."""
  name = schedule_config.name
  warmup = int(schedule_config.warmup_steps or 0)
  end_value = float(schedule_config.end_value or 0.0) * base_lr
  total_steps = max(int(total_steps), 1)
  if name == "constant":
    schedule = optax.constant_schedule(base_lr)
    if warmup:
      schedule = optax.join_schedules(
          [optax.linear_schedule(0.0, base_lr, warmup), schedule], [warmup])
    return schedule
  if name == "cosine":
    return optax.cosine_decay_schedule(base_lr, total_steps, alpha=end_value / base_lr
                                       if base_lr else 0.0)
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup, max(total_steps, warmup + 1),
                                              end_value=end_value)
  if name in ("poly", "polynomial"):
    decay = optax.polynomial_schedule(base_lr, end_value, float(schedule_config.power),
                                      max(total_steps - warmup, 1))
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), decay], [warmup])
  if name == "steps":
    factor = float(schedule_config.decay_factor)
    boundaries = sorted(int(b) for b in (schedule_config.boundaries or ()))
    if any(b <= warmup for b in boundaries):
      raise ValueError(f"schedule.boundaries {boundaries} must all exceed warmup_steps={warmup}")
    decay = optax.piecewise_constant_schedule(base_lr, {b - warmup: factor for b in boundaries})
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), decay], [warmup])
  raise ValueError(f"unknown schedule {name!r}; known: constant, cosine, warmup_cosine, poly, "
                   "steps")


def param_path(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


def lr_multiplier_tree(params, multipliers) -> Any:
  """Per-parameter multipliers from ``{regex: multiplier}`` (default 1.0)."""
  rules = [(re.compile(pattern), float(value))
           for pattern, value in dict(multipliers or {}).items()]

  def lookup(path, _):
    name = param_path(path)
    for pattern, value in rules:
      if pattern.search(name):
        return value
    return 1.0

  return jax.tree_util.tree_map_with_path(lookup, params)


def _scale_by_tree(multiplier_fn) -> optax.GradientTransformation:
  """Multiplies each update by a static per-parameter multiplier (per-group learning rate)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    multipliers = multiplier_fn(updates)
    updates = jax.tree.map(lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype),
                           updates, multipliers)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _base_optimizer(opt, schedule: Schedule) -> optax.GradientTransformation:
  name = opt.name
  weight_decay = float(opt.weight_decay or 0.0)
  mask = None if opt.decay_all else _decay_mask
  parts = []
  if name in ("sgd", "momentum", "adam"):
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay, mask))
    if name == "adam":
      parts.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    else:
      if name == "momentum" and not opt.momentum:
        raise ValueError(f"optimizer.name='momentum' needs optimizer.momentum > 0, got "
                         f"{opt.momentum!r} (use name='sgd' for plain SGD)")
      parts.append(optax.sgd(schedule, momentum=opt.momentum or None,
                             nesterov=bool(opt.nesterov)))
  elif name == "adamw":
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=weight_decay, mask=mask))
  else:
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, momentum, adam, adamw")
  return optax.chain(*parts)


def create_optimizer(config) -> tuple[optax.GradientTransformation, Schedule]:
  """``(tx, schedule)`` from ``config.optimizer``, ``config.schedule``, ``num_train_steps``."""
  opt = config.optimizer
  schedule = make_schedule(config.schedule, float(opt.learning_rate),
                           int(config.num_train_steps))
  parts = []
  clip = opt.grad_clip_norm  # 0 or None: off
  if clip:
    parts.append(optax.clip_by_global_norm(float(clip)))
  parts.append(_base_optimizer(opt, schedule))
  multipliers = dict(opt.lr_multipliers or {})
  if any(float(v) != 1.0 for v in multipliers.values()):
    parts.append(_scale_by_tree(lambda tree: lr_multiplier_tree(tree, multipliers)))
  tx = optax.chain(*parts)
  if any(float(v) == 0.0 for v in multipliers.values()):
    def labels(params):
      return jax.tree.map(lambda m: "frozen" if m == 0.0 else "trainable",
                          lr_multiplier_tree(params, multipliers))
    tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
