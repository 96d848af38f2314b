"""Per-example transforms of the input pipeline (TensorFlow graph code, no Python RNG).

An example here is ``{'image': float32 (H,W,3) normalised, 'label': int32 (H,W)}`` plus, for
the instance task, ``'masks': int32 (N,H,W)`` (0/1) and ``'classes': int32 (N,)``. Label and
masks travel stacked as channels of one integer tensor, so every geometric step (nearest
resize, pad, crop, flip) moves them together; boxes are recomputed from the final masks.

Instance examples also get ``pad_mask`` bool (H,W), True where the pixel is padding (the
content is always at the top left: the flip comes before any padding), for DETR's
attention and positional encoding. It is the label channel's padding fill, so every step
that pads marks it; an image that is never padded has an all-False mask.

``resize='detr'`` is DETR's own recipe (``make_coco_transforms`` of facebookresearch/detr):
flip; shorter side drawn from ``min_sizes`` with DETR's size rule (longer side truncated,
capped at ``max_size``); with ``crop`` and probability 1/2 first a resize to a shorter side
from :data:`DETR_CROP_RESIZE_SIZES` and a random crop of :data:`DETR_CROP_RANGE`; then pad
bottom/right to ``image_size``. Evaluation: shorter side ``max(min_sizes)``.

Randomness is stateless: each random op gets its own seed split from a per-example seed, so
a pipeline with the same seed yields the same batches.
"""

from __future__ import annotations

from seg_jax.data._tf import tf

_PAD = -1  # fill of the stacked label/mask tensor; becomes ignore (label) and 0 (masks)
RESIZE_MODES = ("none", "longer_side", "shorter_side", "detr", "original")
# DETR's RandomSelect branch: RandomResize([400, 500, 600]), RandomSizeCrop(384, 600).
DETR_CROP_RESIZE_SIZES = (400, 500, 600)
DETR_CROP_RANGE = (384, 600)
DETR_CROP_PROBABILITY = 0.5


def _stack(example: dict) -> tf.Tensor:
  """``(H,W,1+N)`` int32: label channel first, then the instance masks."""
  parts = [example["label"][..., None]]
  if "masks" in example:
    parts.append(tf.transpose(example["masks"], [1, 2, 0]))
  return tf.concat(parts, axis=-1)


def _unstack(example: dict, stacked: tf.Tensor, image: tf.Tensor, ignore_label: int,
             output_size=None) -> dict:
  """Inverse of :func:`_stack`; instance examples also get ``pad_mask`` (static
  ``output_size x output_size`` unless it is None)."""
  label = stacked[..., 0]
  out = dict(example, image=image, label=tf.where(label == _PAD, ignore_label, label))
  if "masks" in example:
    out["masks"] = tf.cast(tf.transpose(stacked[..., 1:], [2, 0, 1]) > 0, tf.int32)
    pad_mask = label == _PAD
    if output_size is not None:
      pad_mask = tf.ensure_shape(pad_mask, [output_size, output_size])
    out["pad_mask"] = pad_mask
  return out


def _resize(image, stacked, size, antialias: bool = False):
  image = tf.image.resize(image, size, method="bilinear", antialias=antialias)
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
  raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {resize!r}")


def detr_size(height, width, size, max_size=None) -> tf.Tensor:
  """DETR's ``get_size_with_aspect_ratio``: ``(H, W)`` -> int32 ``(h, w)`` with the shorter side
  ``size`` and the longer side truncated (``int``); when the longer side would exceed
  ``max_size``, ``size`` becomes ``round(max_size * shorter / longer)`` (half to even, like
  Python's ``round``). Computed in float64 as Python does."""
  h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  size = tf.cast(size, tf.float64)
  shorter, longer = tf.minimum(h, w), tf.maximum(h, w)
  if max_size is not None:
    size = tf.where(longer / shorter * size > max_size,
                    tf.round(max_size * shorter / longer), size)
  out_h = tf.where(w < h, tf.floor(size * h / w), size)
  out_w = tf.where(w < h, size, tf.floor(size * w / h))
  return tf.cast(tf.stack([out_h, out_w]), tf.int32)


def _detr_resize(image, stacked, size, max_size=None):
  shape = tf.shape(stacked)
  return _resize(image, stacked, detr_size(shape[0], shape[1], size, max_size), antialias=True)


def detr_random_size_crop(image, stacked, seed, crop_range):
  """DETR's ``RandomSizeCrop``: width and height uniform in ``crop_range`` (inclusive, at most
  the image's), then a uniformly placed window. A side shorter than the minimum stays whole
  (DETR would raise)."""
  seeds = tf.random.experimental.stateless_split(seed, num=4)
  shape = tf.shape(stacked)

  def draw(length, seed):
    high = tf.minimum(length, crop_range[1])
    low = tf.minimum(crop_range[0], high)
    return tf.random.stateless_uniform([], seed, low, high + 1, tf.int32)

  crop_h, crop_w = draw(shape[0], seeds[0]), draw(shape[1], seeds[1])
  top = tf.random.stateless_uniform([], seeds[2], 0, shape[0] - crop_h + 1, tf.int32)
  left = tf.random.stateless_uniform([], seeds[3], 0, shape[1] - crop_w + 1, tf.int32)
  return (image[top:top + crop_h, left:left + crop_w],
          stacked[top:top + crop_h, left:left + crop_w])


def detr_train_resize(image, stacked, seed, *, min_sizes, max_size, crop: bool,
                      crop_resize_sizes=DETR_CROP_RESIZE_SIZES, crop_range=DETR_CROP_RANGE,
                      crop_probability: float = DETR_CROP_PROBABILITY):
  """DETR's train ``RandomSelect`` (after the flip): ``RandomResize(min_sizes, max_size)``, or
  with probability ``crop_probability`` (only if ``crop``) ``RandomResize(crop_resize_sizes)``,
  ``RandomSizeCrop(*crop_range)`` and then that ``RandomResize``. Masks (the stacked label
  channels) follow every resize (nearest) and crop; instances cut away vanish later in
  :func:`pack_instances`."""
  seeds = tf.random.experimental.stateless_split(seed, num=4)
  if crop:
    use_crop = tf.random.stateless_uniform([], seeds[0]) < crop_probability

    def resize_and_crop():
      resized = _detr_resize(image, stacked, _choose_min_size(crop_resize_sizes, seeds[1]))
      return detr_random_size_crop(*resized, seeds[2], crop_range)

    image, stacked = tf.cond(use_crop, resize_and_crop, lambda: (image, stacked))
  return _detr_resize(image, stacked, _choose_min_size(min_sizes, seeds[3]), max_size)


def _check_detr_sizes(image_size: int, max_size) -> None:
  if max_size is None or int(max_size) > image_size:
    raise ValueError(f"data.resize='detr' pads to data.image_size={image_size}, which must be "
                     f">= data.max_size={max_size}")


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
  """Random horizontal flip, random scale, pad to the crop size, random crop.

  The flip comes first so padding always lies bottom/right (as in torchvision's and DETR's
  recipes, which pad after all geometric steps). ``resize='original'`` keeps the image as
  it is (only the flip applies): the reference FCN recipe trains on whole images at their
  own size, one per batch. ``resize='shorter_side'`` is Detectron2's multi-scale training: a
  shorter side drawn from ``min_sizes``, the longer side capped at ``max_size``
  (``scale_range`` multiplies it; keep it (1, 1)). ``resize='detr'``: DETR's recipe
  (:func:`detr_train_resize`; ``crop`` enables its random resize-crop branch), padded to
  ``image_size``.
  """
  if resize not in RESIZE_MODES:
    raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {resize!r}")
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  image, stacked = example["image"], _stack(example)
  if flip:
    do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    image = tf.cond(do_flip, lambda: image[:, ::-1], lambda: image)
    stacked = tf.cond(do_flip, lambda: stacked[:, ::-1], lambda: stacked)
  if resize == "original":
    return _unstack(example, stacked, image, ignore_label)
  if resize == "detr":
    _check_detr_sizes(image_size, max_size)
    if tuple(scale_range) != (1.0, 1.0):
      raise ValueError(f"data.resize='detr' draws its own scales: set "
                       f"data.augmentation.scale_range=(1.0, 1.0), got {tuple(scale_range)}")
    image, stacked = detr_train_resize(image, stacked, seeds[0], min_sizes=min_sizes,
                                       max_size=max_size, crop=crop)
    image, stacked = _pad_to(image, stacked, image_size, image_size)
    # DETR's rounding can overshoot max_size by a pixel or so on extreme aspect ratios
    image, stacked = image[:image_size, :image_size], stacked[:image_size, :image_size]
    return _unstack(example, stacked, image, ignore_label, image_size)
  shape = tf.shape(stacked)
  min_size = _choose_min_size(min_sizes, seeds[4]) if resize == "shorter_side" else None
  scale = base_scale(shape[0], shape[1], image_size, resize, min_size, max_size)
  scale *= tf.random.stateless_uniform([], seeds[0], minval=scale_range[0],
                                       maxval=scale_range[1])
  if crop:
    image, stacked = _resize(image, stacked, _scaled_size(shape[0], shape[1], scale))
    image, stacked = _pad_to(image, stacked, image_size, image_size)
    shape = tf.shape(stacked)
    top = tf.random.stateless_uniform([], seeds[1], 0, shape[0] - image_size + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, shape[1] - image_size + 1, tf.int32)
    image = image[top:top + image_size, left:left + image_size]
    stacked = stacked[top:top + image_size, left:left + image_size]
  else:  # no crop: squash to the square output size, scale augmentation is moot
    image, stacked = _resize(image, stacked, [image_size, image_size])
  return _unstack(example, stacked, image, ignore_label, image_size)


def eval_transform(example: dict, *, image_size: int, resize: str, ignore_label: int,
                   min_sizes=None, max_size=None) -> dict:
  """Deterministic: shrink so the image fits ``image_size`` (or map its longer side to it
  when ``resize='longer_side'``; ``shorter_side`` uses the largest of ``min_sizes``, the
  Detectron2 test size; ``detr`` DETR's size rule for that shorter side), keep the aspect
  ratio, pad bottom/right with ignore.
  ``resize='original'``: the example unchanged (whole image at its own size).

  Instance examples (with ``masks``) get ``resized_size``: the height and width of the
  content inside the padded image (to map predictions back to original pixels), and
  ``pad_mask``.
  """
  if resize == "original":
    if "masks" in example:
      example = dict(example, resized_size=tf.shape(example["image"])[:2],
                     pad_mask=tf.zeros_like(example["label"], tf.bool))
    return example
  image, stacked = example["image"], _stack(example)
  shape = tf.shape(stacked)
  if resize == "detr":
    _check_detr_sizes(image_size, max_size)
    size = detr_size(shape[0], shape[1], max(min_sizes), max_size)
    image, stacked = _resize(image, stacked, size, antialias=True)
  else:
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
  out = _unstack(example, stacked, image, ignore_label, image_size)
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
