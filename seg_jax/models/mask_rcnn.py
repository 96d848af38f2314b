"""Mask R-CNN (He et al. 2017): ResNet-FPN backbone, RPN, box head and mask head.

Follows torchvision's ``maskrcnn_resnet50_fpn`` (FPN P2-P6 with max-pool P6, one anchor
size per level x 3 ratios, RPN box coder weights 1, RoI box coder weights (10, 10, 5, 5),
7x7 box / 14x14 mask RoIAlign, two FC layers, four 3x3 convs + 2x2 transposed conv, per-class
28x28 masks) but with static shapes throughout so the whole train step jits:
proposals, sampled RoIs and detections are fixed-size padded arrays with validity masks.

Classes: ``num_classes`` counts *object* classes (4 for shapes); the heads add a
background entry at index 0 internally, and inputs/outputs use 0-based object classes.

Training: ``model.apply(variables, images, train=True, targets=batch,
rngs={'sampling': key}, mutable=['batch_stats'])`` returns the head outputs and targets
that :func:`seg_jax.losses.mask_rcnn.mask_rcnn_loss` turns into the five losses.
``targets`` holds ``boxes (B,M,4)`` xyxy pixels, ``classes (B,M)``, ``instance_masks
(B,M,H,W)`` and ``box_valid (B,M)`` (the batch dict itself works).
Optional ``targets['image_index'] (B,)``: the global index of each image; its RPN/RoI
samples use ``fold_in(sampling key, index)``, so they do not depend on how the batch is
split over devices (default ``arange(B)``).
Inference (``train=False``): ``boxes (B,D,4)``, ``scores (B,D)``, ``classes (B,D)`` (-1
padding), ``valid (B,D)``, ``mask_probs (B,D,H,W)``, ``masks`` (probs > threshold) and
``mask_box_probs (B,D,S,S)`` (the box-relative masks, for pasting at another resolution).
With ``with_mask=False`` (Faster R-CNN) there is no mask head and no mask output.
Input height and width must be multiples of 32.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.layers import Conv
from seg_jax.models import roi_heads, rpn
from seg_jax.models.resnet import ResNet
from seg_jax.ops.anchors import generate_anchors
from seg_jax.ops.roi_align import roi_align_batched


class FPN(nn.Module):
  """Feature pyramid (Lin et al. 2017): lateral 1x1, nearest top-down, 3x3 outputs, P6."""
  channels: int = 256
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
    init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    inner = [Conv(self.channels, 1, kernel_init=init, dtype=self.dtype,
                  name=f"inner_blocks_{i}") for i in range(len(features))]
    layer = [Conv(self.channels, 3, kernel_init=init, dtype=self.dtype,
                  name=f"layer_blocks_{i}") for i in range(len(features))]
    last = inner[-1](features[-1])
    outputs = [layer[-1](last)]
    for i in range(len(features) - 2, -1, -1):
      lateral = inner[i](features[i])
      up = jnp.repeat(jnp.repeat(last, 2, axis=1), 2, axis=2)
      last = lateral + up[:, :lateral.shape[1], :lateral.shape[2]]
      outputs.insert(0, layer[i](last))
    outputs.append(outputs[-1][:, ::2, ::2])  # P6 = max_pool(kernel 1, stride 2) of P5
    return outputs


class MaskRCNN(nn.Module):
  """Mask R-CNN with a ResNet-FPN backbone (see module docstring for I/O).

  ``frozen_bn=True`` (torchvision's choice, for ImageNet-initialised backbones) makes every
  backbone BatchNorm a constant affine map, i.e. the identity at random init: train from
  scratch with ``frozen_bn=False``. ``roi_op``: ``'align'`` (RoIAlign with pixel-centre
  alignment, Detectron2's default), ``'align_legacy'`` (``aligned=False``, the paper's and
  torchvision's ``MultiScaleRoIAlign``) or ``'pool'`` (Fast R-CNN's RoIPool). Mask targets
  always use RoIAlign (unaligned for ``align_legacy``). ``with_mask=False`` is Faster R-CNN.
  """
  num_classes: int = 4
  backbone_depth: int = 50
  width: float = 1.0
  frozen_bn: bool = True
  fpn_channels: Optional[int] = None  # default int(256 * width)
  anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,))
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  rpn_batch_size: int = 256
  rpn_positive_fraction: float = 0.5
  rpn_fg_iou: float = 0.7
  rpn_bg_iou: float = 0.3
  rpn_nms_threshold: float = 0.7
  rpn_pre_nms_top_n_train: int = 2000
  rpn_post_nms_top_n_train: int = 2000
  rpn_pre_nms_top_n_test: int = 1000
  rpn_post_nms_top_n_test: int = 1000
  roi_batch_size: int = 512
  roi_positive_fraction: float = 0.25
  roi_fg_iou: float = 0.5
  roi_bg_iou: float = 0.5
  representation_size: Optional[int] = None  # default int(1024 * width)
  mask_channels: Optional[int] = None  # default int(256 * width)
  box_pool_size: int = 7
  mask_pool_size: int = 14
  sampling_ratio: int = 2
  roi_op: str = "align"
  with_mask: bool = True
  score_threshold: float = 0.05
  detection_nms_threshold: float = 0.5
  max_detections: int = 100
  mask_threshold: float = 0.5
  dtype: Optional[Any] = None
  bn_axis_name: Optional[str] = None  # pmap axis for a trainable backbone BatchNorm

  def _sized(self, value: Optional[int], base: int) -> int:
    return int(value) if value is not None else max(1, int(base * self.width))

  def _sampling_rng(self) -> jax.Array:
    for name in ("sampling", "dropout"):
      if self.has_rng(name):
        return self.make_rng(name)
    return jax.random.key(0)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               targets: Optional[dict] = None) -> dict[str, jax.Array]:
    if images.ndim != 4 or images.shape[1] % 32 or images.shape[2] % 32:
      raise ValueError(f"MaskRCNN expects (B, H, W, C) images with H, W multiples of 32, "
                       f"got {images.shape}")
    if len(self.anchor_sizes) != 5:
      raise ValueError(f"MaskRCNN needs 5 anchor-size tuples (P2-P6), got {self.anchor_sizes}")
    batch, height, width = images.shape[:3]
    image_size = (height, width)
    feats = ResNet(self.backbone_depth, self.width, self.frozen_bn, self.dtype,
                   bn_axis_name=self.bn_axis_name, name="backbone")(images, train)
    pyramid = FPN(self._sized(self.fpn_channels, 256), self.dtype, name="fpn")(
        [feats[k] for k in ("c2", "c3", "c4", "c5")])
    anchors_per_loc = len(self.anchor_sizes[0]) * len(self.aspect_ratios)
    logits, deltas = rpn.RPNHead(anchors_per_loc, self.dtype, name="rpn")(pyramid)
    feature_sizes = [p.shape[1:3] for p in pyramid]
    anchors = jnp.asarray(generate_anchors(image_size, feature_sizes, self.anchor_sizes,
                                           (self.aspect_ratios,) * len(pyramid)))
    level_sizes = [h * w * anchors_per_loc for h, w in feature_sizes]
    pre_n, post_n = ((self.rpn_pre_nms_top_n_train, self.rpn_post_nms_top_n_train) if train
                     else (self.rpn_pre_nms_top_n_test, self.rpn_post_nms_top_n_test))
    select = functools.partial(rpn.select_proposals, anchors=anchors, level_sizes=level_sizes,
                               image_size=image_size, pre_nms_top_n=pre_n,
                               post_nms_top_n=post_n, nms_threshold=self.rpn_nms_threshold)
    proposals, proposal_valid = jax.vmap(select)(logits, deltas)

    roi_features = pyramid[:4]
    strides = [height // p.shape[1] for p in roi_features]
    if self.roi_op not in roi_heads.ROI_OPS:
      raise ValueError(f"MaskRCNN.roi_op must be one of {roi_heads.ROI_OPS}, got "
                       f"{self.roi_op!r}")
    pool = functools.partial(roi_heads.multilevel_roi_pool, roi_features, strides,
                             roi_op=self.roi_op, sampling_ratio=self.sampling_ratio)
    box_head = roi_heads.BoxHead(self.num_classes, self._sized(self.representation_size, 1024),
                                 self.dtype, name="box_head")
    mask_head = (roi_heads.MaskHead(self.num_classes, self._sized(self.mask_channels, 256),
                                    self.dtype, name="mask_head") if self.with_mask else None)

    def run_box_head(boxes):  # (B, R, 4) -> logits (B, R, K+1), deltas (B, R, K+1, 4)
      r = boxes.shape[1]
      pooled = pool(boxes, self.box_pool_size)
      cls, box = box_head(pooled.reshape(batch * r, *pooled.shape[2:]))
      return cls.reshape(batch, r, -1), box.reshape(batch, r, -1, 4)

    def run_mask_head(boxes):  # (B, R, 4) -> (B, R, S, S, K+1)
      r = boxes.shape[1]
      pooled = pool(boxes, self.mask_pool_size)
      out = mask_head(pooled.reshape(batch * r, *pooled.shape[2:]))
      return out.reshape(batch, r, *out.shape[1:])

    if not train:
      return self._inference(run_box_head, run_mask_head, proposals, proposal_valid,
                             image_size)
    if targets is None:
      raise ValueError("MaskRCNN(train=True) needs targets (boxes, classes, instance_masks, "
                       "box_valid)")
    return self._training(run_box_head, run_mask_head, logits, deltas, anchors, proposals,
                          proposal_valid, targets)

  def _training(self, run_box_head, run_mask_head, logits, deltas, anchors, proposals,
                proposal_valid, targets):
    gt_boxes = jnp.asarray(targets["boxes"], jnp.float32)
    gt_classes = jnp.asarray(targets["classes"], jnp.int32)
    gt_valid = jnp.asarray(targets["box_valid"], bool)
    gt_masks = targets["instance_masks"]
    batch = gt_classes.shape[0]
    index = jnp.asarray(targets.get("image_index", jnp.arange(batch)), jnp.int32)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(self._sampling_rng(), index)
    rpn_keys, roi_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    anchor_fn = functools.partial(rpn.anchor_targets, batch_size=self.rpn_batch_size,
                                  positive_fraction=self.rpn_positive_fraction,
                                  high=self.rpn_fg_iou, low=self.rpn_bg_iou)
    rpn_labels, rpn_targets = jax.vmap(anchor_fn, in_axes=(0, None, 0, 0))(
        rpn_keys, anchors, gt_boxes, gt_valid)
    roi_fn = functools.partial(roi_heads.roi_targets, batch_size=self.roi_batch_size,
                               positive_fraction=self.roi_positive_fraction,
                               fg_iou=self.roi_fg_iou, bg_iou=self.roi_bg_iou)
    rois, roi_labels, roi_box_targets, matched = jax.vmap(roi_fn)(
        roi_keys, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid)
    roi_logits, roi_deltas = run_box_head(rois)
    outputs = {
        "rpn_logits": logits, "rpn_deltas": deltas, "rpn_labels": rpn_labels,
        "rpn_targets": rpn_targets, "proposals": proposals, "proposal_valid": proposal_valid,
        "rois": rois, "roi_logits": roi_logits, "roi_deltas": roi_deltas,
        "roi_labels": roi_labels, "roi_targets": roi_box_targets,
    }
    if not self.with_mask:
      return outputs
    # Positives are sorted first, so this prefix contains every sampled positive.
    num_mask = min(int(self.roi_batch_size * self.roi_positive_fraction), rois.shape[1])
    mask_rois = rois[:, :num_mask]
    mask_labels = jnp.where(roi_labels[:, :num_mask] > 0, roi_labels[:, :num_mask], -1)
    mask_logits = run_mask_head(mask_rois)
    # Mask targets: RoIAlign of every gt mask (as channels) on each RoI, keep the matched one.
    out_size = mask_logits.shape[2]
    masks_nhwc = jnp.moveaxis(jnp.asarray(gt_masks, jnp.float32), 1, -1)
    pooled_masks = roi_align_batched(masks_nhwc, mask_rois, out_size,
                                     sampling_ratio=self.sampling_ratio,
                                     aligned=self.roi_op != "align_legacy")
    mask_targets = jnp.take_along_axis(
        pooled_masks, matched[:, :num_mask, None, None, None], axis=-1)[..., 0]
    return {**outputs, "mask_logits": mask_logits, "mask_labels": mask_labels,
            "mask_targets": mask_targets}

  def _inference(self, run_box_head, run_mask_head, proposals, proposal_valid, image_size):
    cls, box = run_box_head(proposals)
    detect = functools.partial(roi_heads.detections, image_size=image_size,
                               score_threshold=self.score_threshold,
                               nms_threshold=self.detection_nms_threshold,
                               max_detections=self.max_detections)
    boxes, scores, classes, valid = jax.vmap(detect)(cls, box, proposals, proposal_valid)
    outputs = {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid,
               "proposals": proposals, "proposal_valid": proposal_valid}
    if not self.with_mask:
      return outputs
    mask_logits = run_mask_head(boxes)
    chosen = jnp.take_along_axis(mask_logits, jnp.maximum(classes, 0)[:, :, None, None, None] + 1,
                                 axis=-1)[..., 0]
    probs = jax.nn.sigmoid(chosen.astype(jnp.float32))
    pasted = jax.vmap(roi_heads.paste_masks, in_axes=(0, 0, None))(probs, boxes, image_size)
    pasted = jnp.where(valid[:, :, None, None], pasted, 0.0)
    return {**outputs, "mask_probs": pasted, "masks": pasted > self.mask_threshold,
            "mask_box_probs": probs}
