"""Image classification: the stand-in for ImageNet pretraining.

The targets come from the segmentation batches the semantic pipeline already yields, one of
two kinds (``config.classification.target``):

* ``'single'``: one label per image, the non-background class covering the most valid
  pixels (on ``shapes/single128`` every image holds exactly one shape, so this is *the*
  shape); softmax cross-entropy; evaluation sums an exact ``(C-1, C-1)`` confusion matrix:
  top-1 accuracy and per-class accuracy.
* ``'presence'``: multi-label, every non-background class with at least one valid pixel;
  sigmoid cross-entropy; exact per-class counts at probability 0.5: ``subset_accuracy`` (all
  presence bits right, scikit-learn's multi-label ``accuracy_score``), per-class and mean F1.

Classifiers (e.g. ``VGG`` with its fc6/fc7/fc8 head) have ``num_classes = C - 1``; their
trunk and fc layers then initialise FCN, SegNet or DeconvNet (``init_weights=<this run>``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seg_jax.tasks import semantic

Batch = dict[str, Any]


def _ignore_label(config) -> int:
  return int(config.data.ignore_label)


def presence_targets(labels: jax.Array, num_classes: int, ignore_label: int) -> jax.Array:
  """``(B, H, W)`` label maps -> ``(B, num_classes - 1)`` float presence of classes 1..C-1."""
  classes = jnp.arange(1, num_classes, dtype=labels.dtype)
  hits = (labels[..., None] == classes) & (labels[..., None] != ignore_label)
  return jnp.any(hits, axis=(1, 2)).astype(jnp.float32)


def _target(config) -> str:
  target = config.classification.target
  if target not in ("single", "presence"):
    raise ValueError(f"classification.target must be 'single' or 'presence', got {target!r}")
  return target


def dominant_class(labels: jax.Array, num_classes: int, ignore_label: int) -> jax.Array:
  """``(B, H, W)`` label maps -> ``(B,)`` index in 0..C-2 of the non-background class with
  the most pixels (ties: the lower class)."""
  classes = jnp.arange(1, num_classes, dtype=labels.dtype)
  counts = jnp.sum((labels[..., None] == classes) & (labels[..., None] != ignore_label),
                   axis=(1, 2))
  return jnp.argmax(counts, axis=-1).astype(jnp.int32)


def _check_logits(logits: jax.Array, config) -> int:
  num_classes = int(config.data.num_classes)
  if logits.ndim != 2 or logits.shape[-1] != num_classes - 1:
    raise ValueError(f"the classification task needs logits (B, {num_classes - 1}) (one per "
                     f"non-background class; set model.num_classes={num_classes - 1}), got "
                     f"{tuple(logits.shape)}")
  return num_classes


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  params_rng, dropout_rng = jax.random.split(rng)
  return dict(model.init({"params": params_rng, "dropout": dropout_rng},
                         jnp.asarray(batch["image"]), train=False))


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config):
  """Mean sigmoid cross-entropy over the presence targets."""
  logits, batch_stats = semantic.train_forward(model, params, batch_stats, batch["image"], rng)
  num_classes = _check_logits(logits, config)
  logits = logits.astype(jnp.float32)
  if _target(config) == "single":
    targets = dominant_class(batch["label"], num_classes, _ignore_label(config))
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == targets)
    return loss, ({"accuracy": accuracy}, batch_stats)
  targets = presence_targets(batch["label"], num_classes, _ignore_label(config))
  loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
  exact = jnp.all((logits > 0) == (targets > 0.5), axis=-1)
  return loss, ({"subset_accuracy": jnp.mean(exact)}, batch_stats)


def predict(model, variables, batch: Batch, config) -> jax.Array:
  """Class probabilities ``(B, C - 1)`` (softmax for 'single', sigmoid for 'presence')."""
  logits = model.apply(variables, batch["image"], train=False)
  _check_logits(logits, config)
  return jax.nn.softmax(logits) if _target(config) == "single" else jax.nn.sigmoid(logits)


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  """'single': the confusion matrix; 'presence': per-class (TP, FP, FN, TN) counts and the
  number of exact matches."""
  logits = model.apply(variables, batch["image"], train=False)
  num_classes = _check_logits(logits, config)
  valid = batch["valid"] if "valid" in batch else jnp.ones(logits.shape[0], bool)
  if _target(config) == "single":
    truth = dominant_class(batch["label"], num_classes, _ignore_label(config))
    guess = jnp.argmax(logits, -1)
    confusion = jnp.zeros((num_classes - 1,) * 2, jnp.int32).at[truth, guess].add(
        valid.astype(jnp.int32))
    return {"confusion": confusion}
  truth = presence_targets(batch["label"], num_classes, _ignore_label(config)) > 0.5
  guess = logits > 0
  v = valid[:, None]
  counts = jnp.stack([jnp.sum(guess & truth & v, 0), jnp.sum(guess & ~truth & v, 0),
                      jnp.sum(~guess & truth & v, 0), jnp.sum(~guess & ~truth & v, 0)], -1)
  exact = jnp.sum(jnp.all(guess == truth, axis=-1) & valid)
  return {"counts": counts.astype(jnp.int32), "exact": exact.astype(jnp.int32),
          "images": jnp.sum(valid).astype(jnp.int32)}


def _names(info: dict, count: int) -> list[str]:
  names = list(info.get("class_names") or [])[1:]
  return names if len(names) == count else [str(i + 1) for i in range(count)]


def finalize_eval(summed: dict, info: dict, config) -> dict:
  del config
  if "confusion" in summed:
    confusion = np.asarray(summed["confusion"], np.float64)
    totals = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
      per_class = np.diag(confusion) / totals
    return {"accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
            "mean_class_accuracy": float(np.nanmean(per_class)),
            "per_class_accuracy": {n: (None if np.isnan(v) else float(v))
                                   for n, v in zip(_names(info, len(totals)), per_class)}}
  counts = np.asarray(summed["counts"], np.float64)
  tp, fp, fn, tn = counts.T
  with np.errstate(invalid="ignore", divide="ignore"):
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    accuracy = (tp + tn) / np.maximum(tp + fp + fn + tn, 1)
  names = _names(info, len(f1))
  images = max(int(summed["images"]), 1)
  return {"subset_accuracy": float(summed["exact"]) / images,
          "mean_f1": float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else float("nan"),
          "mean_class_accuracy": float(np.mean(accuracy)),
          "per_class_f1": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, f1)}}


def format_scores(scores: dict, info: dict) -> str:
  del info
  if "per_class_accuracy" in scores:
    lines = [f"top-1 accuracy {scores['accuracy']:.3f}   mean class accuracy "
             f"{scores['mean_class_accuracy']:.3f}"]
    for name, value in scores["per_class_accuracy"].items():
      lines.append(f"  {name:>12s}  {'n/a' if value is None else f'{value:.3f}'}")
    return "\n".join(lines)
  lines = [f"subset accuracy (all classes right) {scores['subset_accuracy']:.3f}   "
           f"mean F1 {scores['mean_f1']:.3f}   mean class accuracy "
           f"{scores['mean_class_accuracy']:.3f}"]
  for name, value in scores["per_class_f1"].items():
    lines.append(f"  {name:>12s}  F1 {'n/a' if value is None else f'{value:.3f}'}")
  return "\n".join(lines)


def overlays(batch: Batch, predictions, info: dict, config) -> list[np.ndarray]:
  """No pictures for classification (the scores table says it all)."""
  del batch, predictions, info, config
  return []
