"""The presence-classification task: targets from label maps, exact evaluation counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.tasks import classification
from seg_jax.training.config import base_config


def _config(num_classes=5, target="presence"):
  config = base_config(task="classification")  # ignore_label 255
  config.data.num_classes = num_classes
  config.classification.target = target
  return config


class FixedLogits(nn.Module):
  """Returns the logits stored in the batch image's first pixel row (a test double)."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return x[:, 0, :4, 0] + 0.0 * self.param("unused", nn.initializers.zeros, ())


def test_presence_targets_match_numpy_and_ignore_void():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, (6, 9, 9)).astype(np.int32)
  labels[0] = 0
  labels[1] = 255
  labels[1, 0, 0] = 3
  got = np.asarray(classification.presence_targets(jnp.asarray(labels), 5, 255))
  expected = np.stack([[np.any(l == c) for c in range(1, 5)] for l in labels]).astype(np.float32)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(got[1], [0, 0, 1, 0])


def test_eval_counts_and_scores_equal_a_direct_computation():
  rng = np.random.default_rng(1)
  batch_size = 16
  labels = rng.integers(0, 5, (batch_size, 4, 4)).astype(np.int32)
  logits = rng.normal(size=(batch_size, 4)).astype(np.float32)
  image = np.zeros((batch_size, 4, 4, 3), np.float32)
  image[:, 0, :4, 0] = logits
  valid = np.arange(batch_size) < 13
  batch = {"image": jnp.asarray(image), "label": jnp.asarray(labels), "valid": jnp.asarray(valid)}
  model = FixedLogits()
  variables = model.init(jax.random.key(0), batch["image"])
  out = jax.jit(lambda v, b: classification.eval_outputs(model, v, b, _config()))(variables, batch)
  truth = np.stack([[np.any(l == c) for c in range(1, 5)] for l in labels])[valid]
  guess = (logits > 0)[valid]
  scores = classification.finalize_eval(jax.tree.map(np.asarray, out),
                                        {"class_names": ["bg", "a", "b", "c", "d"]}, None)
  assert scores["subset_accuracy"] == pytest.approx(np.mean(np.all(truth == guess, 1)))
  f1 = [2 * np.sum(g & t) / (np.sum(g) + np.sum(t)) for g, t in zip(guess.T, truth.T)]
  assert scores["mean_f1"] == pytest.approx(np.mean(f1))
  assert scores["per_class_f1"]["c"] == pytest.approx(f1[2])
  assert scores["mean_class_accuracy"] == pytest.approx(np.mean(truth == guess))


def test_wrong_number_of_logits_names_the_fix():
  batch = {"image": jnp.zeros((2, 4, 4, 3)), "label": jnp.zeros((2, 4, 4), jnp.int32)}
  model = FixedLogits()
  variables = model.init(jax.random.key(0), batch["image"])
  with pytest.raises(ValueError, match="set model.num_classes=5"):
    classification.loss_fn(model, variables["params"], {}, batch, jax.random.key(1), _config(6))


def test_single_label_targets_and_confusion_equal_numpy():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 5, (12, 6, 6)).astype(np.int32)
  labels[0] = 0
  labels[0, :2, :2] = 4  # one object: class index 3
  logits = rng.normal(size=(12, 4)).astype(np.float32)
  image = np.zeros((12, 4, 4, 3), np.float32)
  image[:, 0, :4, 0] = logits
  valid = np.arange(12) < 10
  batch = {"image": jnp.asarray(image), "label": jnp.asarray(labels), "valid": jnp.asarray(valid)}
  counts = np.stack([[np.sum(l == c) for c in range(1, 5)] for l in labels])
  truth = np.argmax(counts, 1)
  assert truth[0] == 3
  np.testing.assert_array_equal(
      classification.dominant_class(jnp.asarray(labels), 5, 255), truth)
  model = FixedLogits()
  variables = model.init(jax.random.key(0), batch["image"])
  config = _config(target="single")
  out = classification.eval_outputs(model, variables, batch, config)
  scores = classification.finalize_eval(jax.tree.map(np.asarray, out), {}, config)
  guess = np.argmax(logits, 1)
  assert scores["accuracy"] == pytest.approx(np.mean((guess == truth)[valid]))
  per_class = [np.mean(guess[valid & (truth == c)] == c) for c in range(4)
               if np.any(valid & (truth == c))]
  assert scores["mean_class_accuracy"] == pytest.approx(np.mean(per_class))
  loss, (metrics, _) = classification.loss_fn(model, variables["params"], {}, batch,
                                              jax.random.key(1), config)
  log_softmax = logits - np.log(np.sum(np.exp(logits), 1, keepdims=True))
  assert float(loss) == pytest.approx(-np.mean(log_softmax[np.arange(12), truth]), rel=1e-5)
