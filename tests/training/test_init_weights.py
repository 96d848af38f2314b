"""``init_weights``: torchvision ResNet files and other seg_jax runs as initialisation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import models
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import init_weights as init_lib
from seg_jax.training.config import base_config


def _config(path, model=None, **extra):
  config = base_config()
  config.init_weights = str(path)
  config.model = model or {"name": "detr"}
  config.update(extra)
  return config


def _zeros(tree):
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)


@pytest.mark.parametrize("frozen", [True, False])
def test_torchvision_resnet_file_fills_the_detr_backbone(tmp_path, frozen,
                                                         torchvision_resnet_keys):
  rng = np.random.default_rng(0)
  state = {k: rng.normal(size=s).astype(np.float32)
           for k, s in torchvision_resnet_keys(18).items()}
  path = tmp_path / "resnet18.npz"
  np.savez(path, **state)
  fields = dict(num_classes=3, num_queries=4, d_model=16, num_heads=2, num_encoder_layers=1,
                num_decoder_layers=1, dim_feedforward=16, backbone_depth=18, frozen_bn=frozen)
  model = models.get_model("detr", **fields)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  params, stats = init_lib.load_init_weights(
      _config(path, {"name": "detr", **fields}), _zeros(shapes["params"]),
      _zeros(shapes["batch_stats"]))
  backbone = params["backbone"]
  np.testing.assert_array_equal(backbone["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  norm = stats["backbone"]["layer3_0"]["downsample_1"]
  np.testing.assert_array_equal(norm["mean"], state["layer3.0.downsample.1.running_mean"])
  scale = (stats if frozen else params)["backbone"]["layer4_1"]["bn2"]["scale"]
  np.testing.assert_array_equal(scale, state["layer4.1.bn2.weight"])
  # The detector's own layers keep their (here: zero) initialisation.
  assert not np.any(params["class_embed"]["kernel"])
  assert not np.any(params["input_proj"]["kernel"])


def test_resnet_file_for_a_model_without_resnet_backbone(tmp_path, torchvision_resnet_keys):
  path = tmp_path / "resnet18.npz"
  np.savez(path, **{k: np.zeros(s, np.float32)
                    for k, s in torchvision_resnet_keys(18).items()})
  with pytest.raises(ValueError, match="model .unet. cannot import a weights file"):
    init_lib.load_init_weights(_config(path, {"name": "unet"}), {"enc": {"w": np.zeros(2)}})


def _save_run(workdir, step=7):
  variables = {"params": {"backbone": {"conv": {"kernel": np.ones((3, 3, 2, 4), np.float32)}},
                          "head": {"kernel": np.ones((4, 2), np.float32)}},
               "batch_stats": {"backbone": {"bn": {"mean": np.full(4, 2.0, np.float32)}}},
               "step": np.int32(step)}
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             save_every=1)
  checkpointer.save(step, variables, force=True)
  checkpointer.close()


def _target(kernel_shape=(3, 3, 2, 4)):
  params = {"backbone": {"conv": {"kernel": np.zeros(kernel_shape, np.float32)}},
            "head": {"kernel": np.zeros((4, 5), np.float32)}}
  return params, {"backbone": {"bn": {"mean": np.zeros(4, np.float32)}}}


@pytest.mark.parametrize("suffix", ["", "checkpoints", "checkpoints/7"])
def test_run_directory_copies_only_the_backbone(tmp_path, suffix):
  _save_run(str(tmp_path / "run"))
  params, stats = init_lib.load_init_weights(
      _config(tmp_path / "run" / suffix, init_weights_scopes=["backbone"]), *_target())
  np.testing.assert_array_equal(params["backbone"]["conv"]["kernel"], 1.0)
  np.testing.assert_array_equal(stats["backbone"]["bn"]["mean"], 2.0)
  np.testing.assert_array_equal(params["head"]["kernel"], 0.0)  # other shape, not copied


def test_run_directory_errors_name_the_problem(tmp_path):
  _save_run(str(tmp_path / "run"))
  with pytest.raises(ValueError, match="backbone/conv/kernel has shape"):
    init_lib.load_init_weights(_config(tmp_path / "run", init_weights_scopes=["backbone"]),
                               *_target((3, 3, 2, 8)))
  with pytest.raises(ValueError, match="no 'neck' parameters"):
    init_lib.load_init_weights(_config(tmp_path / "run", init_weights_scopes=["neck"]),
                           *_target())
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="has no seg_jax checkpoint"):
    init_lib.load_init_weights(_config(tmp_path / "empty"), *_target())
