"""``seg_jax.training.config.base_config``: every field the code reads, and nothing guessed.

The code reads config fields directly, so a config without one must fail naming it (not run
on a default made up in code); saved configs of older runs are completed from the base.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seg_jax import predict
from seg_jax.tasks import semantic
from seg_jax.training import loop, optim
from seg_jax.training.config import TASKS, base_config


@pytest.mark.parametrize("task", TASKS)
def test_base_config_per_task(task):
  config = base_config("shapes", task)
  assert config.task == task and config.data.name == "shapes"
  assert config.data.task == ("instances" if task in ("instance", "detection") else "semantic")
  assert config.classification.target == "single"  # defined even where it is unused
  keys = set(config.loss)
  if task in ("semantic", "classification"):
    assert keys == {"class_weights", "reduction"} and config.loss.reduction == "mean"
  elif task == "instance":
    assert config.loss.smooth_l1_beta == pytest.approx(1 / 9)
    assert {k for k in keys if k.startswith("loss_")} == {
        "loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask"}
  else:
    assert keys == {"eos_coef", "class_weight", "bbox_weight", "giou_weight", "mask_weight",
                    "dice_weight", "aux_loss"}
  with pytest.raises(ValueError, match="unknown task 'panoptic'"):
    base_config("shapes", "panoptic")


def test_base_optimizer_is_plain_sgd_at_a_constant_rate():
  config = base_config()
  tx, schedule = optim.create_optimizer(config)
  lr = config.optimizer.learning_rate
  assert [float(schedule(s)) for s in (0, 10, config.num_train_steps)] == [lr] * 3
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([1.0, 1.0])}
  state = tx.init(params)
  for step in range(3):
    grads = {"w": params["w"] * (step + 1), "b": params["b"] - step}
    updates, state = tx.update(grads, state, params)
    for name in params:  # no momentum, no weight decay, no clipping: -lr * g
      np.testing.assert_allclose(updates[name], -lr * np.asarray(grads[name]), rtol=1e-6)
    params = optax.apply_updates(params, updates)


def _without(config, field):
  *parents, leaf = field.split(".")
  section = config
  for parent in parents:
    section = section[parent]
  del section[leaf]
  return leaf


@pytest.mark.parametrize("field", ["distributed", "parallelism", "dtype", "optimizer.momentum",
                                   "schedule.warmup_steps", "keep_checkpoints"])
def test_loop_names_a_missing_field(field, tmp_path):
  config = base_config()
  config.data.builder_config = "tiny"
  config.model = {"name": "full_res_fcn", "features": 4, "num_layers": 1}
  leaf = _without(config, field)
  with pytest.raises((AttributeError, KeyError), match=f"'{leaf}'"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_task_names_a_missing_field():
  config = base_config()
  _without(config, "loss.reduction")
  config.model = {"name": "full_res_fcn", "features": 2, "num_layers": 1}
  model = loop.build_model(config, num_classes=2)
  batch = {"image": jnp.zeros((1, 8, 8, 3)), "label": jnp.zeros((1, 8, 8), jnp.int32)}
  variables = model.init(jax.random.key(0), batch["image"])
  with pytest.raises(AttributeError, match="'reduction'"):
    semantic.loss_fn(model, variables["params"], variables["batch_stats"], batch,
                     jax.random.key(1), config)


def test_saved_config_is_completed_from_the_base(tmp_path):
  saved = base_config("shapes", "instance").to_dict()
  saved["model"] = {"name": "mask_rcnn", "num_classes": 4, "anchor_sizes": [[8], [16]]}
  saved["eval_score_bins"] = 50
  del saved["dtype"], saved["loss"]["smooth_l1_beta"], saved["data"]["resize"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = predict.load_config(str(tmp_path))
  assert config.task == "instance" and config.eval_score_bins == 50  # saved values win
  assert config.model.to_dict() == {"name": "mask_rcnn", "num_classes": 4,
                                    "anchor_sizes": ((8,), (16,))}
  assert config.dtype == "float32" and config.data.resize == "none"  # missing: the base's
  assert config.loss.smooth_l1_beta == pytest.approx(1 / 9)
