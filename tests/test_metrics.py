import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.metrics import confusion_matrix, format_scores_table, segmentation_scores


def _confusion_loop(labels, preds, num_classes, ignore_index):
  hist = np.zeros((num_classes, num_classes), np.int64)
  for label, pred in zip(labels.ravel(), preds.ravel()):
    if label == ignore_index:
      continue
    hist[label, pred] += 1
  return hist


def _fcn_scores_loop(hist):
  """The FCN paper's formulas, written out class by class."""
  num_classes = hist.shape[0]
  n = hist.astype(float)
  t = [n[i].sum() for i in range(num_classes)]
  accs, ious, fw = [], [], 0.0
  for i in range(num_classes):
    denom = t[i] + sum(n[j, i] for j in range(num_classes)) - n[i, i]
    if t[i] > 0:
      accs.append(n[i, i] / t[i])
    if denom > 0:
      ious.append(n[i, i] / denom)
      fw += t[i] * n[i, i] / denom
  return (sum(n[i, i] for i in range(num_classes)) / sum(t), np.mean(accs), np.mean(ious),
          fw / sum(t))


@pytest.mark.parametrize("seed,num_classes", [(0, 2), (1, 5), (2, 21)])
def test_confusion_matrix_matches_loop_and_sums_over_batches(seed, num_classes):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=(3, 9, 7))
  labels[rng.random(labels.shape) < 0.2] = 255
  preds = rng.integers(0, num_classes, size=labels.shape)
  expected = _confusion_loop(labels, preds, num_classes, 255)
  jitted = jax.jit(confusion_matrix, static_argnums=2)
  got = np.asarray(jitted(jnp.asarray(labels), jnp.asarray(preds), num_classes))
  np.testing.assert_array_equal(got, expected)
  summed = sum(np.asarray(confusion_matrix(labels[i], preds[i], num_classes)) for i in range(3))
  np.testing.assert_array_equal(summed, expected)


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_fcn_definitions(seed):
  rng = np.random.default_rng(seed)
  num_classes = 6
  labels = rng.integers(0, num_classes - 1, size=(500,))  # last class never labelled
  preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, num_classes, 500))
  hist = _confusion_loop(labels, preds, num_classes, 255)
  scores = segmentation_scores(hist)
  expected = _fcn_scores_loop(hist)
  got = (scores["pixel_accuracy"], scores["mean_accuracy"], scores["mean_iou"],
         scores["frequency_weighted_iou"])
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_class_absent_from_labels_and_predictions_is_excluded():
  hist = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])
  scores = segmentation_scores(hist)
  assert np.isnan(scores["per_class_iou"][2])
  np.testing.assert_allclose(scores["mean_iou"], np.mean([5 / 8, 4 / 7]))
  perfect = segmentation_scores(np.diag([3, 0, 7]))
  assert perfect["mean_iou"] == 1.0 and perfect["pixel_accuracy"] == 1.0


def test_predicted_but_unlabelled_class_counts_as_zero_iou():
  hist = np.array([[4, 1], [0, 0]])
  scores = segmentation_scores(hist)
  np.testing.assert_allclose(scores["mean_iou"], (4 / 5 + 0) / 2)
  np.testing.assert_allclose(scores["mean_accuracy"], 4 / 5)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="same shape"):
    confusion_matrix(jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 2), jnp.int32), 2)
  with pytest.raises(ValueError, match="square"):
    segmentation_scores(np.zeros((2, 3)))
  table = format_scores_table(segmentation_scores(np.eye(2) * 3), ["bg", "fg"])
  assert "| fg | 1.0000 |" in table
