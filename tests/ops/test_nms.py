"""NMS against a brute-force numpy greedy loop (torchvision semantics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops import batched_nms, nms


def _iou(a, b):
  area_a = (a[2] - a[0]) * (a[3] - a[1])
  area_b = (b[2] - b[0]) * (b[3] - b[1])
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.float32(inter) / np.float32(area_a + area_b - inter)


def _reference_nms(boxes, scores, threshold, valid=None):
  order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python sort is stable
  kept = []
  for i in order:
    if valid is not None and not valid[i]:
      continue
    if all(not (_iou(boxes[k], boxes[i]) > threshold) for k in kept):
      kept.append(i)
  return kept


def _random_boxes(rng, n, quantise):
  xy = rng.uniform(0, 40, size=(n, 2))
  wh = rng.uniform(1, 20, size=(n, 2))
  boxes = np.concatenate([xy, xy + wh], 1)
  if quantise:
    boxes = np.round(boxes / 4) * 4
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 4)
  return boxes.astype(np.float32)


def _padded(kept, max_output):
  out = np.full(max_output, -1, np.int64)
  kept = kept[:max_output]
  out[:len(kept)] = kept
  return out


_jit_nms = jax.jit(nms, static_argnums=3)


@pytest.mark.parametrize("seed", range(16))
def test_nms_matches_bruteforce(seed):
  # Fixed shapes (n = 48, max_output in {48, 7}) keep compilation to two programs; the
  # number of real boxes varies through the validity mask.
  rng = np.random.default_rng(seed)
  n = 48
  boxes = _random_boxes(rng, n, quantise=seed % 2 == 0)
  # Quantised scores create many ties; the order must follow the stable sort.
  scores = (np.round(rng.uniform(size=n) * 5) / 5).astype(np.float32)
  valid = np.arange(n) < rng.integers(1, n + 1)
  threshold = float(rng.choice([0.0, 0.3, 0.5, 0.7]))
  max_output = 48 if seed % 3 else 7
  got = np.asarray(_jit_nms(boxes, scores, threshold, max_output, jnp.asarray(valid)))
  want = _padded(_reference_nms(boxes, scores, threshold, valid), max_output)
  np.testing.assert_array_equal(got, want)


def test_nms_identical_boxes_and_valid_mask():
  boxes = np.array([[0, 0, 10, 10]] * 4 + [[20, 20, 30, 30]], np.float32)
  scores = np.array([0.5, 0.9, 0.9, 0.1, 0.2], np.float32)
  np.testing.assert_array_equal(_jit_nms(boxes, scores, 0.5, 4), [1, 4, -1, -1])
  valid = np.array([True, False, True, True, True])
  got = _jit_nms(boxes, scores, 0.5, 4, jnp.asarray(valid))
  np.testing.assert_array_equal(got, _padded(_reference_nms(boxes, scores, 0.5, valid), 4))
  np.testing.assert_array_equal(got, [2, 4, -1, -1])


def test_nms_threshold_is_strict():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
  scores = np.array([1.0, 0.5], np.float32)
  np.testing.assert_array_equal(_jit_nms(boxes, scores, 0.5, 2), [0, 1])
  np.testing.assert_array_equal(_jit_nms(boxes, scores, 0.49, 2), [0, -1])


@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_is_per_class(seed):
  rng = np.random.default_rng(100 + seed)
  n = 40
  boxes = _random_boxes(rng, n, quantise=True)
  scores = rng.uniform(size=n).astype(np.float32)
  classes = rng.integers(0, 3, size=n).astype(np.int32)
  got = np.asarray(jax.jit(batched_nms, static_argnums=4)(boxes, scores, classes, 0.4, n))
  kept = []
  for c in range(3):
    idx = np.flatnonzero(classes == c)
    kept += [idx[k] for k in _reference_nms(boxes[idx], scores[idx], 0.4)]
  kept = sorted(kept, key=lambda i: (-scores[i], i))
  np.testing.assert_array_equal(got, _padded(kept, n))


def test_nms_rejects_bad_shapes():
  with pytest.raises(ValueError, match="boxes"):
    nms(jnp.zeros((3, 5)), jnp.zeros(3), 0.5, 2)
  with pytest.raises(ValueError, match="scores"):
    nms(jnp.zeros((3, 4)), jnp.zeros(4), 0.5, 2)
