"""``loop.predict_eval_split`` (the official COCO evaluation's predictions) on padded images
gives DETR the padding mask, as training and in-training evaluation do; the
``experiments.evaluate_coco`` CLI on such a run (boxes and masks)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import detr_shapes
from seg_jax.tasks import detection
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop

pytestmark = pytest.mark.usefixtures("fast_compile")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONTENT, CANVAS = 32, 48  # tiny shapes images, padded bottom/right into a larger input
OVERRIDES = {"data.image_size": CANVAS, "model.with_masks": True}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A DETR (with mask head) run directory: a checkpoint of random initial variables."""
  workdir = str(tmp_path_factory.mktemp("detr_run"))
  config = detr_shapes.get_config("runlocal")
  config.data.image_size = CANVAS  # eval pads every 32 px image to 48 px
  config.model.with_masks = True
  model = loop.build_model(config, 5)
  init = jax.jit(lambda key, batch: detection.init_variables(model, key, batch))
  variables = jax.device_get(init(jax.random.key(1),
                                  {"image": np.zeros((1, CANVAS, CANVAS, 3), np.float32)}))
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
  checkpointer.save(3, {"step": np.int32(3), **variables}, force=True)
  checkpointer.close()
  return workdir, config, model, variables


def test_official_eval_predictions_of_padded_images_use_the_pad_mask(run):
  workdir, config, model, variables = run
  step, pairs = loop.predict_eval_split(config, workdir)
  assert step == 3
  # Jitted as in-training evaluation runs it (eager DETR dispatches op by op: much slower).
  in_training = jax.jit(lambda v, b: detection.predict(model, v, b, config))
  count = 0
  for batch, predictions in pairs:
    mask = batch["pad_mask"]
    valid = batch["valid"]
    assert mask[valid][:, CONTENT:].all() and not mask[valid][:, :CONTENT, :CONTENT].any()
    # The in-training evaluation's predictions: the whole batch, mask included.
    expected = jax.tree.map(np.asarray, in_training(variables, batch))
    for key in ("scores", "classes", "boxes", "mask_probs"):
      np.testing.assert_allclose(predictions[key][valid], expected[key][valid], rtol=1e-5,
                                 atol=1e-4, err_msg=key)
    # Boxes are relative to the 32 px content: their centres (sigmoid outputs) lie inside it.
    boxes = predictions["boxes"][valid]
    assert ((boxes[..., :2] + boxes[..., 2:]) / 2).max() <= CONTENT
    count += int(valid.sum())
  assert count == 4  # the tiny validation split


def test_evaluate_coco_cli_scores_boxes_and_masks(run):
  workdir = run[0]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate_coco", "--config=detr_shapes:runlocal",
       f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith("step 3: results ")
  assert [line.split(":")[0].strip() for line in lines[1:]] == ["bbox", "segm"]
  records = json.load(open(os.path.join(workdir, "coco_results.json")))
  assert records and all("segmentation" in r for r in records)
  assert {r["image_id"] for r in records} == {0, 1, 2, 3}
