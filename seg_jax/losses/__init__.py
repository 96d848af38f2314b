"""Losses. Semantic segmentation losses are re-exported here; the detection losses live in
``seg_jax.losses.detr`` and ``seg_jax.losses.mask_rcnn``."""

from seg_jax.losses.segmentation import (class_pixel_statistics, median_frequency_weights,
                                         pixel_cross_entropy)

__all__ = ["pixel_cross_entropy", "median_frequency_weights", "class_pixel_statistics"]
