"""Fixed-size non-maximum suppression (jittable, torchvision semantics).

``nms`` returns a static-length ``(max_output,)`` int32 vector of kept indices in
descending score order, padded with ``-1``. The kept set and its order equal
``torchvision.ops.nms``: boxes are visited in a *stable* descending score sort, and a
box is dropped when its IoU with an already kept box is strictly greater than
``iou_threshold``. The pairwise IoU matrix is materialised (``O(N^2)`` memory), so keep
``N`` to a few thousand (pre-NMS top-k) as detectors do anyway.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from seg_jax.ops.boxes import box_iou


def _check(boxes: jax.Array, scores: jax.Array, max_output: int) -> None:
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"nms: boxes must be (N, 4), got {boxes.shape}")
  if scores.shape != boxes.shape[:1]:
    raise ValueError(f"nms: scores must be ({boxes.shape[0]},), got {scores.shape}")
  if not isinstance(max_output, int) or max_output < 0:
    raise ValueError(f"nms: max_output must be a static int >= 0, got {max_output!r}")


def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float, max_output: int,
        valid: Optional[jax.Array] = None) -> jax.Array:
  """Greedy NMS. Returns ``(max_output,)`` int32 kept indices, padded with ``-1``.

  Args:
    boxes: ``(N, 4)`` xyxy.
    scores: ``(N,)``.
    iou_threshold: suppress when IoU with a kept box is ``> iou_threshold``.
    max_output: static output length (the number of kept boxes returned at most).
    valid: optional ``(N,)`` bool; invalid boxes are never kept and suppress nothing
      (the padded-input convention used throughout the detection code).
  """
  _check(boxes, scores, max_output)
  n = boxes.shape[0]
  if n == 0 or max_output == 0:
    return jnp.full((max_output,), -1, jnp.int32)
  order = jnp.argsort(-scores, stable=True)
  sorted_boxes = boxes[order]
  # IoU is computed in float32 exactly as box_iou does (inter / (a1 + a2 - inter)).
  iou = box_iou(sorted_boxes.astype(jnp.float32), sorted_boxes.astype(jnp.float32))
  overlaps = iou > iou_threshold  # NaN (degenerate boxes) compares False, as in torch.
  later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
  overlaps = overlaps & later
  alive = jnp.ones((n,), bool) if valid is None else valid[order]

  def body(i, alive):
    # Box i is kept iff still alive here; a kept box suppresses the later ones it overlaps.
    return alive & ~(alive[i] & overlaps[i])

  keep_sorted = jax.lax.fori_loop(0, n, body, alive)
  # Compact kept positions to the front, preserving score order.
  rank = jnp.cumsum(keep_sorted) - 1
  slot = jnp.where(keep_sorted & (rank < max_output), rank, max_output)
  out = jnp.full((max_output + 1,), -1, jnp.int32)
  out = out.at[slot].set(order.astype(jnp.int32), mode="drop")
  return out[:max_output]


def batched_nms(boxes: jax.Array, scores: jax.Array, classes: jax.Array, iou_threshold: float,
                max_output: int, valid: Optional[jax.Array] = None) -> jax.Array:
  """Class-wise NMS (boxes of different classes never suppress each other).

  Uses torchvision's offset trick: every class is shifted by ``class * (max_coord + 1)``
  so boxes of different classes cannot overlap, then a single :func:`nms` runs.
  """
  _check(boxes, scores, max_output)
  if classes.shape != scores.shape:
    raise ValueError(f"batched_nms: classes must be {scores.shape}, got {classes.shape}")
  if boxes.shape[0] == 0:
    return jnp.full((max_output,), -1, jnp.int32)
  considered = boxes if valid is None else jnp.where(valid[:, None], boxes, 0)
  max_coordinate = jnp.max(considered)
  offsets = classes.astype(boxes.dtype) * (max_coordinate + 1)
  return nms(boxes + offsets[:, None], scores, iou_threshold, max_output, valid=valid)
