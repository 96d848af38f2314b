"""Oxford-IIIT Pet (TFDS ``oxford_iiit_pet``) as a 2-class semantic segmentation task.

The TFDS trimap ``segmentation_mask`` uses 1 = pet, 2 = background, 3 = border (the
uncertain band around the pet outline). Mapping used here:
``1 -> 1 (pet)``, ``2 -> 0 (background)``, ``3 -> 255 (ignore)``; any other value (absent
from the real data) is also ignored, so the border band is neither rewarded nor penalised.
Splits are TFDS' ``train`` (3,680) and ``test`` (3,669).
"""

from __future__ import annotations

from seg_jax.data._tf import tf

PET_CLASS_NAMES = ("background", "pet")
IGNORE_LABEL = 255


def trimap_to_labels(trimap: tf.Tensor) -> tf.Tensor:
  """Trimap (any shape, values 1/2/3) -> uint8 labels 0 = background, 1 = pet, 255."""
  trimap = tf.cast(trimap, tf.int32)
  labels = tf.where(trimap == 1, 1, tf.where(trimap == 2, 0, IGNORE_LABEL))
  return tf.cast(labels, tf.uint8)


def pets_to_semantic(example: dict) -> dict:
  """Maps a decoded ``oxford_iiit_pet`` example to ``{'image', 'segmentation'}``.

  The mask is resized (nearest) to the image size if they differ, which never happens in the
  real data but does in ``tfds.testing.mock_data``'s random examples.
  """
  image = example["image"]
  labels = trimap_to_labels(example["segmentation_mask"])
  size = tf.shape(image)[:2]
  labels = tf.cond(
      tf.reduce_all(tf.shape(labels)[:2] == size),
      lambda: labels,
      lambda: tf.cast(tf.image.resize(labels, size, method="nearest"), tf.uint8))
  return {"image": image, "segmentation": labels}
