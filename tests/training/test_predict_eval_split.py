"""``loop.predict_eval_split`` (the official COCO evaluation's predictions) on padded images
gives DETR the padding mask, as training and in-training evaluation do."""

import os

import jax
import numpy as np
import pytest

from experiments.configs import detr_shapes
from seg_jax.tasks import detection
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop

pytestmark = pytest.mark.usefixtures("fast_compile")
CONTENT, CANVAS = 32, 48  # tiny shapes images, padded bottom/right into a larger input


def test_official_eval_predictions_of_padded_images_use_the_pad_mask(tmp_path):
  config = detr_shapes.get_config("runlocal")
  config.data.image_size = CANVAS  # eval pads every 32 px image to 48 px
  model = loop.build_model(config, 5)
  variables = jax.device_get(detection.init_variables(
      model, jax.random.key(1), {"image": np.zeros((1, CANVAS, CANVAS, 3), np.float32)}))
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(tmp_path, "checkpoints"),
                                             save_every=1)
  checkpointer.save(3, {"step": np.int32(3), **variables}, force=True)
  checkpointer.close()

  step, pairs = loop.predict_eval_split(config, str(tmp_path))
  assert step == 3
  count = 0
  for batch, predictions in pairs:
    mask = batch["pad_mask"]
    valid = batch["valid"]
    assert mask[valid][:, CONTENT:].all() and not mask[valid][:, :CONTENT, :CONTENT].any()
    # The in-training evaluation's predictions: the whole batch, mask included.
    expected = jax.tree.map(np.asarray, detection.predict(model, variables, batch, config))
    for key in ("scores", "classes", "boxes"):
      np.testing.assert_allclose(predictions[key][valid], expected[key][valid], rtol=1e-5,
                                 atol=1e-4, err_msg=key)
    # Boxes are relative to the 32 px content: their centres (sigmoid outputs) lie inside it.
    boxes = predictions["boxes"][valid]
    assert ((boxes[..., :2] + boxes[..., 2:]) / 2).max() <= CONTENT
    count += int(valid.sum())
  assert count == 4  # the tiny validation split
