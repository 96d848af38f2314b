"""The pure train/eval steps and the semantic task, against brute-force references."""

import functools
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _training_workers as workers  # noqa: E402

from seg_jax.tasks import get_task, semantic, task_names  # noqa: E402
from seg_jax.training import loop, state as state_lib, step as step_lib  # noqa: E402
from seg_jax.training.config import base_config  # noqa: E402

CONFIG = base_config()  # ignore_label 255, unweighted mean cross-entropy


def _state(model, tx, batch):
  return jax.jit(functools.partial(state_lib.create_train_state, semantic, model, tx))(
      jax.random.key(0), {k: v[:1] for k, v in batch.items()})


def test_train_step_reduces_loss_and_does_not_retrace():
  model, tx = workers.tiny_model(3), optax.adam(3e-2)
  batch = workers.make_batches(1, batch=4, size=8)[0]
  batch["label"][:, :2] = 255  # ignored rows
  state = _state(model, tx, batch)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def train(state, batch):
    return step_lib.train_step(state, batch, task=semantic, model=model, tx=tx, config=CONFIG)

  losses = []
  for _ in range(8):
    state, metrics = train(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  assert int(state.step) == 8
  assert set(metrics) == {"loss", "pixel_accuracy", "grad_norm"}
  assert jax.tree.leaves(state.batch_stats)  # BatchNorm statistics were updated


def test_eval_step_confusion_matches_numpy():
  model, tx = workers.tiny_model(3), optax.sgd(0.1)
  batch = workers.make_batches(1, batch=4, size=8)[0]
  batch["label"][0, 0, :3] = 255
  batch["valid"] = np.array([True, True, True, False])  # last example is padding
  state = _state(model, tx, batch)
  confusion = np.asarray(step_lib.eval_step(state, batch, task=semantic, model=model,
                                            config=CONFIG)["confusion"])
  logits = model.apply(state.variables, batch["image"], train=False)
  predictions = np.asarray(jnp.argmax(logits, -1))
  expected = np.zeros((3, 3), np.int64)
  for n in range(3):
    for label, prediction in zip(batch["label"][n].ravel(), predictions[n].ravel()):
      if label != 255:
        expected[label, prediction] += 1
  np.testing.assert_array_equal(confusion, expected)
  scores = semantic.finalize_eval({"confusion": confusion}, {"class_names": ["a", "b", "c"]},
                                  CONFIG)
  assert scores["pixel_accuracy"] == pytest.approx(np.trace(expected) / expected.sum())
  assert set(scores["per_class_iou"]) == {"a", "b", "c"}
  assert "mean IU" in semantic.format_scores(scores, {})


def test_crop_labels_and_overlays():
  labels = jnp.arange(2 * 6 * 6).reshape(2, 6, 6)
  np.testing.assert_array_equal(semantic.crop_labels_to(labels, (2, 4)), labels[:, 2:4, 1:5])
  with pytest.raises(ValueError, match="larger than the labels"):
    semantic.crop_labels_to(labels, (8, 8))
  config = base_config()
  config.data.update({"mean": (0.5,) * 3, "std": (0.25,) * 3})
  batch = {"image": np.zeros((1, 4, 4, 3), np.float32), "label": np.full((1, 4, 4), 255)}
  (image,) = semantic.overlays(batch, np.ones((1, 4, 4), np.int32), {}, config)
  assert image.dtype == np.uint8 and image.shape[1] >= 3 * 256  # panels upscaled to >= 256 px
  pixels = image.reshape(-1, 3)

  def count(color):
    return int(np.sum(np.all(pixels == np.asarray(color, np.uint8), axis=-1)))

  assert count([128, 128, 128]) >= 256 * 256  # the input panel: denormalised mean grey
  assert count(semantic.palette()[1]) >= 256 * 256  # the prediction panel: class 1
  assert count([255, 255, 255]) >= 256 * 256  # ground truth: ignore label is white


def test_task_lookup_and_model_dtype():
  assert "semantic" in task_names() and get_task("semantic") is semantic
  with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: .*semantic"):
    get_task("nope")
  config = base_config()
  config.model.depth = 1
  config.dtype = "bfloat16"
  model = loop.build_model(config, num_classes=4, bn_axis_name="batch")
  assert model.dtype == jnp.bfloat16 and model.num_classes == 4 and model.bn_axis_name == "batch"
  config.dtype = "float8"
  with pytest.raises(ValueError, match="unknown dtype 'float8'"):
    loop.build_model(config, num_classes=4)
