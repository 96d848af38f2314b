"""Per-example transforms of the input pipeline (TensorFlow graph code, no Python RNG).

An example here is ``{'image': float32 (H,W,3) normalised, 'label': int32 (H,W)}`` plus, for
the instance task, ``'masks': int32 (N,H,W)`` (0/1) and ``'classes': int32 (N,)``. Label and
masks travel stacked as channels of one integer tensor, so every geometric step (nearest
resize, pad, crop, flip) moves them together; boxes are recomputed from the final masks.

Randomness is stateless: each random op gets its own seed split from a per-example seed, so
a pipeline with the same seed yields the same batches.
"""

from __future__ import annotations

from seg_jax.data._tf import tf

_PAD = -1  # fill of the stacked label/mask tensor; becomes ignore (label) and 0 (masks)


def _stack(example: dict) -> tf.Tensor:
  """``(H,W,1+N)`` int32: label channel first, then the instance masks."""
  parts = [example["label"][..., None]]
  if "masks" in example:
    parts.append(tf.transpose(example["masks"], [1, 2, 0]))
  return tf.concat(parts, axis=-1)


def _unstack(example: dict, stacked: tf.Tensor, image: tf.Tensor, ignore_label: int) -> dict:
  label = stacked[..., 0]
  out = dict(example, image=image, label=tf.where(label == _PAD, ignore_label, label))
  if "masks" in example:
    out["masks"] = tf.cast(tf.transpose(stacked[..., 1:], [2, 0, 1]) > 0, tf.int32)
  return out


def _resize(image, stacked, size):
  image = tf.image.resize(image, size, method="bilinear")
  stacked = tf.image.resize(stacked, size, method="nearest")
  return image, tf.cast(stacked, tf.int32)


def _pad_to(image, stacked, height, width):
  """Pads bottom/right to at least ``(height, width)``: image with 0 (= the mean), label 255."""
  shape = tf.shape(stacked)
  pad_h, pad_w = tf.maximum(height - shape[0], 0), tf.maximum(width - shape[1], 0)
  paddings = [[0, pad_h], [0, pad_w], [0, 0]]
  image = tf.pad(image, paddings, constant_values=0.0)
  stacked = tf.pad(stacked, paddings, constant_values=_PAD)
  return image, stacked


def base_scale(height, width, image_size: int, resize: str, min_size=None,
               max_size=None) -> tf.Tensor:
  """Scale applied before augmentation.

  ``longer_side`` maps max(H,W) to ``image_size``; ``shorter_side`` (Detectron2's
  ``ResizeShortestEdge``) maps min(H,W) to ``min_size`` unless that makes max(H,W) exceed
  ``max_size``, in which case max(H,W) becomes ``max_size``; ``none`` keeps the size.
  """
  longer = tf.cast(tf.maximum(height, width), tf.float32)
  if resize == "longer_side":
    return image_size / longer
  if resize == "shorter_side":
    if min_size is None or max_size is None:
      raise ValueError("data.resize='shorter_side' needs data.min_sizes and data.max_size")
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    return tf.minimum(tf.cast(min_size, tf.float32) / shorter, float(max_size) / longer)
  if resize == "none":
    return tf.constant(1.0)
  raise ValueError(f"data.resize must be 'none', 'longer_side', 'shorter_side' or 'original', "
                   f"got {resize!r}")


def _choose_min_size(min_sizes, seed) -> tf.Tensor:
  """One of ``min_sizes`` uniformly (Detectron2's multi-scale "choice" sampling)."""
  sizes = tf.constant(list(min_sizes), tf.float32)
  index = tf.random.stateless_uniform([], seed, 0, len(min_sizes), tf.int32)
  return sizes[index]


def _scaled_size(height, width, scale):
  size = tf.cast(tf.stack([height, width]), tf.float32) * scale
  return tf.maximum(tf.cast(tf.round(size), tf.int32), 1)


def train_transform(example: dict, seed: tf.Tensor, *, image_size: int, scale_range,
                    flip: bool, crop: bool, resize: str, ignore_label: int, min_sizes=None,
                    max_size=None) -> dict:
  """Random scale, pad to the crop size, random crop, random horizontal flip.

  ``resize='original'`` keeps the image as it is (only the flip applies): the reference FCN
  recipe trains on whole images at their own size, one per batch. ``resize='shorter_side'``
  is Detectron2's multi-scale training: a shorter side drawn from ``min_sizes``, the longer
  side capped at ``max_size`` (``scale_range`` multiplies it; keep it (1, 1)).
  """
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  image, stacked = example["image"], _stack(example)
  shape = tf.shape(stacked)
  min_size = _choose_min_size(min_sizes, seeds[4]) if resize == "shorter_side" else None
  if resize != "original":
    scale = base_scale(shape[0], shape[1], image_size, resize, min_size, max_size)
    scale *= tf.random.stateless_uniform([], seeds[0], minval=scale_range[0],
                                         maxval=scale_range[1])
  if resize == "original":
    pass
  elif crop:
    image, stacked = _resize(image, stacked, _scaled_size(shape[0], shape[1], scale))
    image, stacked = _pad_to(image, stacked, image_size, image_size)
    shape = tf.shape(stacked)
    top = tf.random.stateless_uniform([], seeds[1], 0, shape[0] - image_size + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, shape[1] - image_size + 1, tf.int32)
    image = image[top:top + image_size, left:left + image_size]
    stacked = stacked[top:top + image_size, left:left + image_size]
  else:  # no crop: squash to the square output size, scale augmentation is moot
    image, stacked = _resize(image, stacked, [image_size, image_size])
  if flip:
    do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    image = tf.cond(do_flip, lambda: image[:, ::-1], lambda: image)
    stacked = tf.cond(do_flip, lambda: stacked[:, ::-1], lambda: stacked)
  return _unstack(example, stacked, image, ignore_label)


def eval_transform(example: dict, *, image_size: int, resize: str, ignore_label: int,
                   min_sizes=None, max_size=None) -> dict:
  """Deterministic: shrink so the image fits ``image_size`` (or map its longer side to it
  when ``resize='longer_side'``; ``shorter_side`` uses the largest of ``min_sizes``, the
  Detectron2 test size), keep the aspect ratio, pad bottom/right with ignore.
  ``resize='original'``: the example unchanged (whole image at its own size).

  Instance examples (with ``masks``) get ``resized_size``: the height and width of the
  content inside the padded image (to map predictions back to original pixels).
  """
  if resize == "original":
    if "masks" in example:
      example = dict(example, resized_size=tf.shape(example["image"])[:2])
    return example
  image, stacked = example["image"], _stack(example)
  shape = tf.shape(stacked)
  longer = tf.cast(tf.maximum(shape[0], shape[1]), tf.float32)
  min_size = max(min_sizes) if resize == "shorter_side" else None
  scale = tf.minimum(1.0, image_size / longer) if resize == "none" else base_scale(
      shape[0], shape[1], image_size, resize, min_size, max_size)
  size = tf.where(tf.equal(scale, 1.0), shape[:2], _scaled_size(shape[0], shape[1], scale))
  image, stacked = tf.cond(
      tf.equal(scale, 1.0),
      lambda: (image, stacked),
      lambda: _resize(image, stacked, size))
  image, stacked = _pad_to(image, stacked, image_size, image_size)
  image, stacked = image[:image_size, :image_size], stacked[:image_size, :image_size]
  out = _unstack(example, stacked, image, ignore_label)
  if "masks" in example:
    out["resized_size"] = tf.minimum(size, image_size)
  return out


def boxes_from_masks(masks: tf.Tensor) -> tf.Tensor:
  """``(N,H,W)`` 0/1 masks -> ``(N,4)`` float32 xyxy boxes, max exclusive (0s if empty)."""
  masks = tf.cast(masks, tf.int32)
  rows, cols = tf.reduce_max(masks, axis=2), tf.reduce_max(masks, axis=1)

  def span(any_along, length):
    lo = tf.argmax(any_along, axis=1, output_type=tf.int32)
    hi = length - tf.argmax(any_along[:, ::-1], axis=1, output_type=tf.int32)
    nonempty = tf.reduce_max(any_along, axis=1) > 0
    return tf.where(nonempty, lo, 0), tf.where(nonempty, hi, 0)

  y1, y2 = span(rows, tf.shape(masks)[1])
  x1, x2 = span(cols, tf.shape(masks)[2])
  return tf.cast(tf.stack([x1, y1, x2, y2], axis=1), tf.float32)


def pack_instances(example: dict, max_instances: int) -> dict:
  """Drops vanished instances, keeps the first ``max_instances``, pads to that size."""
  masks, classes = example.pop("masks"), example.pop("classes")
  keep = tf.reduce_sum(masks, axis=[1, 2]) > 0
  masks = tf.boolean_mask(masks, keep)[:max_instances]
  classes = tf.boolean_mask(classes, keep)[:max_instances]
  count = tf.shape(classes)[0]
  pad = max_instances - count
  boxes = tf.pad(boxes_from_masks(masks), [[0, pad], [0, 0]])
  height, width = masks.shape[1], masks.shape[2]
  example["boxes"] = tf.ensure_shape(boxes, [max_instances, 4])
  example["classes"] = tf.ensure_shape(tf.pad(classes, [[0, pad]]), [max_instances])
  example["instance_masks"] = tf.ensure_shape(
      tf.cast(tf.pad(masks, [[0, pad], [0, 0], [0, 0]]), tf.uint8),
      [max_instances, height, width])
  example["box_valid"] = tf.range(max_instances) < count
  return example
