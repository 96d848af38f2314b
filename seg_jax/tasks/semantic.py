"""Semantic segmentation task: per-pixel cross-entropy, confusion-matrix evaluation, overlays.

Batches are ``{'image': (B, H, W, 3) float32, 'label': (B, H, W) int32}`` with
``config.data.ignore_label`` (255) marking pixels that do not count; models map images to
``(B, H', W', num_classes)`` logits. When a model's output is smaller than its input
(U-Net with 'valid' padding) the labels are centre-cropped to the logits, as in the U-Net
paper's overlap-tile setting.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import losses, metrics, visualize
from seg_jax.ops.spatial import center_crop

Batch = dict[str, Any]


def _ignore_label(config) -> int:
  return int(config.data.ignore_label)


def _class_weights(config) -> Optional[jax.Array]:
  weights = config.loss.class_weights  # None: every class weighs 1
  return None if weights is None else jnp.asarray(weights, jnp.float32)


def _loss_reduction(config) -> str:
  """``config.loss.reduction``: 'mean' over valid pixels or 'sum' (see loss_fn)."""
  return config.loss.reduction


def crop_labels_to(labels: jax.Array, spatial_shape) -> jax.Array:
  """Centre-crops ``(B, H, W)`` labels to ``spatial_shape`` (no-op when equal)."""
  height, width = labels.shape[1:3]
  out_h, out_w = spatial_shape
  if (out_h, out_w) == (height, width):
    return labels
  if out_h > height or out_w > width:
    raise ValueError(f"model output {out_h}x{out_w} is larger than the labels {height}x{width}")
  return center_crop(labels, (out_h, out_w))


def _has_batch_stats(batch_stats) -> bool:
  return bool(jax.tree_util.tree_leaves(batch_stats))


def init_variables(model, rng: jax.Array, batch: Batch) -> dict:
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({"params": params_rng, "dropout": dropout_rng},
                         jnp.asarray(batch["image"]), train=False)
  return dict(variables)


def train_forward(model, params, batch_stats, images: jax.Array, rng: jax.Array):
  """Training-mode ``model`` output and the updated BatchNorm statistics (unchanged, e.g.
  ``{}``, for models without BatchNorm); ``rng`` drives dropout. Shared by the image tasks."""
  variables = {"params": params}
  if not _has_batch_stats(batch_stats):
    return model.apply(variables, images, train=True, rngs={"dropout": rng}), batch_stats
  variables["batch_stats"] = batch_stats
  output, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                rngs={"dropout": rng})
  return output, updates["batch_stats"]


def loss_fn(model, params, batch_stats, batch: Batch, rng: jax.Array, config):
  """Training-mode cross-entropy over the valid pixels of the batch.

  ``config.loss.reduction='mean'`` averages over the batch's valid pixels; ``'sum'`` sums
  each image's pixel losses and averages over the images (Caffe ``normalize: false``, the
  reference FCN solvers: with their batch of 1 the plain sum).
  """
  logits, batch_stats = train_forward(model, params, batch_stats, batch["image"], rng)
  labels = crop_labels_to(batch["label"], logits.shape[1:3])
  loss = losses.pixel_cross_entropy(logits, labels, ignore_index=_ignore_label(config),
                                    class_weights=_class_weights(config),
                                    reduction=_loss_reduction(config))
  if _loss_reduction(config) == "sum":
    loss = loss / labels.shape[0]
  valid = labels != _ignore_label(config)
  correct = (jnp.argmax(logits, axis=-1) == labels) & valid
  pixel_accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1)
  return loss, ({"pixel_accuracy": pixel_accuracy}, batch_stats)


def _logits(model, variables, images):
  return model.apply(variables, images, train=False)


def predict(model, variables, batch: Batch, config) -> jax.Array:
  """Per-pixel class indices ``(B, H', W')``."""
  del config
  return jnp.argmax(_logits(model, variables, batch["image"]), axis=-1).astype(jnp.int32)


def eval_outputs(model, variables, batch: Batch, config) -> dict:
  """The batch's ``(C, C)`` confusion matrix (padded examples are all-ignore)."""
  logits = _logits(model, variables, batch["image"])
  labels = crop_labels_to(batch["label"], logits.shape[1:3])
  if "valid" in batch:
    labels = jnp.where(batch["valid"][:, None, None], labels, _ignore_label(config))
  predictions = jnp.argmax(logits, axis=-1)
  return {"confusion": metrics.confusion_matrix(labels, predictions, logits.shape[-1],
                                                ignore_index=_ignore_label(config))}


def finalize_eval(summed: dict, info: dict, config) -> dict:
  """FCN scores; ``per_class_iou`` becomes a ``{class name: IU}`` dict."""
  del config
  scores = metrics.segmentation_scores(summed["confusion"])
  names = _class_names(info, len(scores["per_class_iou"]))
  per_class = {name: (None if np.isnan(v) else float(v))
               for name, v in zip(names, scores.pop("per_class_iou"))}
  return {**scores, "per_class_iou": per_class}


def format_scores(scores: dict, info: dict) -> str:
  per_class = scores.get("per_class_iou", {})
  table_scores = dict(scores, per_class_iou=np.array(
      [np.nan if v is None else v for v in per_class.values()], np.float64))
  return metrics.format_scores_table(table_scores, list(per_class) or None)


def _class_names(info: dict, num_classes: int) -> list[str]:
  names = list(info.get("class_names") or [])
  return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


palette = visualize.palette  # detection and instance overlays use it from here


def _to_uint8_image(image: np.ndarray, data_config) -> np.ndarray:
  try:
    # Optional: seg_jax.data loads TensorFlow on first use; a local import keeps
    # ``import seg_jax.tasks`` (and predict-only installs) free of it.
    from seg_jax.data import denormalize  # pylint: disable=g-import-not-at-top
    image = np.asarray(denormalize(image, data_config))
  except ImportError:
    image = np.asarray(image)
  if image.dtype != np.uint8:
    scale = 1.0 if image.max(initial=0.0) > 1.5 else 255.0
    image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
  return image


def overlays(batch: Batch, predictions, info: dict, config) -> list[np.ndarray]:
  """``input | ground truth | prediction`` panels with titles and a legend of the classes shown.

  Images smaller than ``visualize.MIN_SIZE`` are enlarged (nearest neighbour, integer
  factor); labels are centre-cropped to the prediction (valid U-Net).
  """
  colors = palette()
  names = list(info.get("class_names") or [])  # classes without a name are shown as numbers
  images = []
  predictions = np.asarray(predictions)
  for index in range(predictions.shape[0]):
    prediction = predictions[index]
    label = np.asarray(batch["label"][index])
    image = _to_uint8_image(np.asarray(batch["image"][index]), config.data)
    height, width = prediction.shape
    top, left = (label.shape[0] - height) // 2, (label.shape[1] - width) // 2
    label = label[top:top + height, left:left + width]
    image = image[top:top + height, left:left + width]
    factor = visualize.upscale_factor(height, width)
    panels = [visualize.upscale(p, factor) for p in
              (image, visualize.colorize(label, colors), visualize.colorize(prediction, colors))]
    strip = visualize.side_by_side(panels, ["input", "ground truth", "prediction"])
    images.append(visualize.with_legend(strip, *visualize.class_legend([label, prediction],
                                                                       names, colors)))
  return images
