"""The input pipeline: TFDS split -> per-process shard -> augmented, batched numpy dicts.

Batches (numpy): ``image`` float32 (B,H,W,3) normalised as ``data.preprocessing`` says (it must
match the pretrained weights): 'torchvision' (default) RGB in 0..1 space minus ``data.mean``
over ``data.std``; 'caffe' BGR in 0..255 minus :data:`CAFFE_BGR_MEAN` (the Caffe VGG-16 of the
reference FCNs). ``label`` int32 (B,H,W) with ``ignore_label`` (255) on padding and void pixels.
Task ``instances`` adds ``boxes`` float32 (B,M,4) xyxy pixels of the final image (max
exclusive), ``classes`` int32 (B,M) 0-based object classes (no background), ``instance_masks``
uint8 (B,M,H,W) and ``box_valid`` bool (B,M), padded to ``M = max_instances``, plus
``image_id`` int32 (B,) (COCO's image id; for other datasets the example's position in the
split as read in order), ``orig_size`` int32 (B,2) (height, width before any resize),
``pad_mask`` bool (B,H,W), True where a pixel is padding (the content sits at the top left;
DETR's attention and positions ignore the padding and its boxes are relative to the content;
all False for an unpadded image and for eval filler examples) and, on eval batches,
``resized_size`` int32 (B,2) (the image content inside the padded input), so predictions can
be mapped back to original pixels (``seg_jax.coco_eval``).

Train: infinite, shuffled, augmented, ``drop_remainder``; deterministic for a given seed.
``data.resize='original'`` keeps every image at its own size (no resize, crop or pad; the
reference FCN recipe): batches then hold one image and ``batch_size`` must be 1. A jitted step
compiles once per distinct image shape.

Eval: one pass, no randomness, the last batch padded to full size (label = ignore) and a
``valid`` bool (B,) marking real examples, so compiled shapes never change. Every process
yields the same number of eval batches (padding batches are appended where shards differ).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data import augment, builders, coco, pets
from seg_jax.data._tf import tf
# The data config lives in a TensorFlow-free module; re-exported here for existing callers.
from seg_jax.data.config import IMAGENET_MEAN, IMAGENET_STD, default_data_config  # noqa: F401

# The Caffe VGG-16 ILSVRC mean pixel, BGR order, 0..255 (fcn.berkeleyvision.org, pytorch-fcn).
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
PREPROCESSING = ("torchvision", "caffe")
_KNOWN_SIZES = {  # used by dataset_info before a download happened
    ("voc_segmentation", "default"): {"train": 1464, "validation": 1449},
    ("voc_segmentation", "train_aug"): {"train": 10582, "validation": 1449},
    ("voc_segmentation", "fcn"): {"train": 8498, "validation": 736},  # SBD train, seg11valid
    ("oxford_iiit_pet", None): {"train": 3680, "test": 3669},
    ("coco_instances", "default"): {"train": 118287, "validation": 5000},
}


def _validate(cfg) -> builders.DatasetSpec:
  spec = builders.dataset_spec(cfg.name)
  if cfg.num_classes != len(spec.class_names):
    raise ValueError(f"data.num_classes={cfg.num_classes} but {cfg.name} has "
                     f"{len(spec.class_names)} classes")
  task = cfg.task
  if task not in ("semantic", "instances"):
    raise ValueError(f"data.task must be 'semantic' or 'instances', got {task!r}")
  if task == "instances" and not spec.has_instances:
    raise ValueError(f"data.task='instances' needs a dataset with instances; {cfg.name} has none")
  preprocessing = cfg.preprocessing
  if preprocessing not in PREPROCESSING:
    raise ValueError(f"data.preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
  return spec


def normalize(image: tf.Tensor, preprocessing: str, mean, std) -> tf.Tensor:
  """uint8 RGB pixels -> network input: 'caffe' BGR 0..255 minus the mean, 'torchvision'
  ``(pixels / 255 - mean) / std``. :func:`denormalize` inverts it."""
  image = tf.cast(image, tf.float32)
  if preprocessing == "caffe":
    return image[..., ::-1] - tf.constant(CAFFE_BGR_MEAN, tf.float32)
  return (image / 255.0 - mean) / std


def _to_common(example: dict, name: str, instances: bool, mean, std,
               ignore_label: int = 255, preprocessing: str = "torchvision",
               index=None) -> dict:
  """Dataset-specific features -> ``{'image' normalised, 'label', ('masks','classes',
  'image_id', 'orig_size')}``; ``index`` is the example's position in the split."""
  image_id = example.get("image/id", index)
  if name == "oxford_iiit_pet":
    example = pets.pets_to_semantic(example)
  if name == "coco_instances":  # crowd objects dropped; semantic map made from the objects
    example = coco.to_common(example, ignore_label)
  image = normalize(example["image"], preprocessing, mean, std)
  out = {"image": image, "label": tf.cast(example["segmentation"][..., 0], tf.int32)}
  if instances:
    out["masks"] = tf.cast(example["objects"]["mask"][..., 0], tf.int32)
    out["classes"] = tf.cast(example["objects"]["label"], tf.int32)
    out["image_id"] = tf.cast(image_id, tf.int32)
    out["orig_size"] = tf.shape(example["image"])[:2]
  return out


def _finish(example: dict, image_size: int | None, instances: bool, max_instances: int) -> dict:
  """Static shapes for batching; ``image_size=None``: any size (``resize='original'``)."""
  example["image"] = tf.ensure_shape(example["image"], [image_size, image_size, 3])
  example["label"] = tf.ensure_shape(example["label"], [image_size, image_size])
  if instances:
    example["masks"] = tf.ensure_shape(example["masks"], [None, image_size, image_size])
    example = augment.pack_instances(example, max_instances)
  return example


def _pad_batch(batch: dict, batch_size: int, ignore_label: int) -> dict:
  """Pads a possibly partial batch to ``batch_size``; adds the ``valid`` mask."""
  count = tf.shape(batch["image"])[0]
  out = {}
  for key, value in batch.items():
    paddings = [[0, batch_size - count]] + [[0, 0]] * (len(value.shape) - 1)
    fill = ignore_label if key == "label" else 0
    padded = tf.pad(value, paddings, constant_values=tf.cast(fill, value.dtype))
    out[key] = tf.ensure_shape(padded, [batch_size] + value.shape[1:].as_list())
  out["valid"] = tf.range(batch_size) < count
  return out


def _empty_batch(spec: dict, ignore_label: int) -> dict:
  return {k: tf.fill(s.shape, tf.cast(ignore_label if k == "label" else 0, s.dtype))
          for k, s in spec.items()}


def _num_examples(builder, split) -> int | None:
  try:
    return int(builder.info.splits[split].num_examples) or None
  except (KeyError, ValueError, TypeError):
    return None  # unknown (e.g. under tfds.testing.mock_data)


def _process(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # local: the data package itself does not need JAX
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count})")
  return process_index, process_count


def _check_original_size(cfg, global_batch_size: int, train: bool) -> None:
  """``resize='original'`` batches one whole image: no batching, cropping or rescaling."""
  if global_batch_size != 1:
    raise ValueError(f"data.resize='original' keeps every image at its own size, so "
                     f"batch_size must be 1, got {global_batch_size}")
  aug = cfg.augmentation
  scale_range = tuple(aug.scale_range)
  if train and (bool(aug.crop) or scale_range != (1.0, 1.0)):
    raise ValueError(f"data.resize='original' trains on whole images: set "
                     f"data.augmentation.crop=False and scale_range=(1.0, 1.0), got "
                     f"crop={aug.crop}, scale_range={scale_range}")


def build_tf_dataset(data_config, *, split: str, train: bool, global_batch_size: int,
                     seed: int = 0, process_index: int | None = None,
                     process_count: int | None = None) -> tf.data.Dataset:
  """The ``tf.data.Dataset`` behind :func:`get_dataset` (batched, not yet numpy)."""
  cfg = data_config
  _validate(cfg)
  process_index, process_count = _process(process_index, process_count)
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={process_count}")
  batch_size = global_batch_size // process_count
  instances = cfg.task == "instances"
  image_size, ignore = int(cfg.image_size), int(cfg.ignore_label)
  mean = tf.constant(cfg.mean, tf.float32)
  std = tf.constant(cfg.std, tf.float32)
  resize = cfg.resize
  sizes = dict(min_sizes=tuple(cfg.min_sizes), max_size=int(cfg.max_size))
  if resize == "shorter_side" and sizes["max_size"] > image_size:
    raise ValueError(f"data.resize='shorter_side' pads to data.image_size={image_size}, which "
                     f"must be >= data.max_size={sizes['max_size']}")
  max_instances = int(cfg.max_instances)
  preprocessing = cfg.preprocessing
  original = resize == "original"
  if original:
    _check_original_size(cfg, global_batch_size, train)
  output_size = None if original else image_size

  builder = builders.get_builder(cfg)
  shards = tfds.even_splits(split, n=process_count) if process_count > 1 else [split]
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  read_config = tfds.ReadConfig(shuffle_seed=seed, options=options, try_autocache=False)
  ds = builder.as_dataset(split=shards[process_index], shuffle_files=train,
                          read_config=read_config)
  offset = 0  # position of this process's shard in the split (example indices as ids)
  if process_index:
    offset = sum(_num_examples(builder, s) or 0 for s in shards[:process_index])
  ds = ds.enumerate(start=offset).map(
      lambda i, ex: _to_common(ex, cfg.name, instances, mean, std, ignore, preprocessing, i),
      num_parallel_calls=tf.data.AUTOTUNE)
  if cfg.cache:
    ds = ds.cache()

  if train:
    aug = cfg.augmentation
    kwargs = dict(image_size=image_size, scale_range=tuple(aug.scale_range),
                  flip=bool(aug.flip), crop=bool(aug.crop), resize=resize, ignore_label=ignore,
                  **sizes)
    base_seed = tf.constant([seed, process_index], tf.int64)

    def transform(index, example):
      example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
      example = augment.train_transform(example, example_seed, **kwargs)
      return _finish(example, output_size, instances, max_instances)

    ds = ds.shuffle(int(cfg.shuffle_buffer), seed=seed,
                    reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate().map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
  else:
    def transform(example):
      example = augment.eval_transform(example, image_size=image_size, resize=resize,
                                       ignore_label=ignore, **sizes)
      return _finish(example, output_size, instances, max_instances)

    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    ds = ds.map(lambda b: _pad_batch(b, batch_size, ignore))
    counts = [_num_examples(builder, s) for s in shards]
    if not original and all(c is not None for c in counts):  # equal counts on every process
      num_batches = -(-max(counts) // batch_size)
      filler = tf.data.Dataset.from_tensors(_empty_batch(ds.element_spec, ignore)).repeat()
      ds = ds.concatenate(filler).take(num_batches)
  return ds.prefetch(int(cfg.prefetch)).with_options(options)


def get_dataset(data_config, *, split: str, train: bool, global_batch_size: int,
                seed: int = 0, process_index: int | None = None,
                process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Iterator of numpy batch dicts for this process (see module docstring)."""
  ds = build_tf_dataset(data_config, split=split, train=train,
                        global_batch_size=global_batch_size, seed=seed,
                        process_index=process_index, process_count=process_count)
  return iter(ds.as_numpy_iterator())


def dataset_info(data_config) -> dict[str, Any]:
  """Class names and split sizes (``shapes`` is prepared if needed; others are not)."""
  spec = _validate(data_config)
  name = data_config.name
  if name == "shapes":
    builder = builders.get_builder(data_config)
  else:
    builder = builders.make_builder(data_config)
  num_examples = {s: int(info.num_examples) for s, info in builder.info.splits.items()}
  if not num_examples:
    key = (name, data_config.builder_config or ("default" if name != "oxford_iiit_pet"
                                                  else None))
    num_examples = dict(_KNOWN_SIZES.get(key, {}))
  return {
      "num_classes": len(spec.class_names),
      "class_names": list(spec.class_names),
      "instance_class_names": list(spec.instance_class_names),
      "ignore_label": int(data_config.ignore_label),
      "num_examples": num_examples,
  }


def denormalize(image: np.ndarray, data_config) -> np.ndarray:
  """Normalised float image(s) ``(...,H,W,3)`` -> uint8 RGB for overlay PNGs."""
  image = np.asarray(image, np.float32)
  if data_config.preprocessing == "caffe":
    pixels = (image + np.asarray(CAFFE_BGR_MEAN, np.float32))[..., ::-1]
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
  mean = np.asarray(data_config.mean, np.float32)
  std = np.asarray(data_config.std, np.float32)
  pixels = (image * std + mean) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
