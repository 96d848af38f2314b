"""Primitive operations: pure ``jnp`` functions, jittable, no Flax state.

One concept per file: ``conv`` (the convolution all layers use), ``conv_transpose`` (the
transposed convolution, PyTorch semantics), ``conv_matrix`` (convolution as a matrix,
transposed convolution as its transpose), ``upsample``, ``unpool``, ``boxes``,
``nms``, ``roi_align`` (+ ``roi_pool``), ``anchors``, ``matching`` (Hungarian matching),
``spatial`` (int-or-pair arguments, crops).
"""

from seg_jax.ops.conv import (
    conv2d, conv_implementation, input_gradient_gemm, kernel_gradient_gemm, normalize_padding)
from seg_jax.ops.conv_transpose import conv_transpose, conv_transpose_output_size
from seg_jax.ops.conv_matrix import conv_matrix
from seg_jax.ops.upsample import bilinear_kernel, resize_bilinear
from seg_jax.ops.unpool import (
    max_pool_with_argmax, max_unpool, unpool_bed_of_nails, unpool_nearest)
from seg_jax.ops.boxes import (
    box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, clip_boxes, decode_boxes,
    encode_boxes, generalized_box_iou)
from seg_jax.ops.nms import batched_nms, nms
from seg_jax.ops.roi_align import assign_fpn_levels, roi_align, roi_align_batched, roi_pool
from seg_jax.ops.anchors import generate_anchors
from seg_jax.ops.matching import hungarian_matching, hungarian_matching_scipy
from seg_jax.ops.spatial import as_pair, center_crop, crop

__all__ = [
    'as_pair', 'assign_fpn_levels', 'batched_nms', 'bilinear_kernel', 'box_area',
    'box_cxcywh_to_xyxy', 'box_iou', 'box_xyxy_to_cxcywh', 'center_crop', 'clip_boxes', 'conv2d',
    'conv_implementation', 'conv_matrix', 'conv_transpose', 'conv_transpose_output_size', 'crop',
    'decode_boxes', 'encode_boxes', 'generalized_box_iou', 'generate_anchors',
    'hungarian_matching', 'hungarian_matching_scipy', 'input_gradient_gemm',
    'kernel_gradient_gemm', 'max_pool_with_argmax', 'max_unpool', 'nms', 'normalize_padding',
    'resize_bilinear', 'roi_align', 'roi_align_batched', 'roi_pool', 'unpool_bed_of_nails',
    'unpool_nearest'
]
