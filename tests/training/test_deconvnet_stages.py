"""DeconvNet's two-stage recipe on shapes at smoke size: stage 1 (``pretrained``) starts its
encoder and fc6/fc7 from the VGG-16-BN classifier run, stage 2 starts every layer — decoder
and BatchNorm statistics included — from the stage-1 run; ``easy`` is the paper's first stage
on centred single shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from experiments.configs import deconvnet_shapes
from seg_jax.training import init_weights as init_lib
from seg_jax.training import loop

pytestmark = pytest.mark.usefixtures("fast_compile")


def _run(config, workdir, init=None):
  config.num_train_steps = 1
  config.checkpoint_every = 1
  config.num_overlays = 0
  if init is not None:
    config.init_weights = str(init)
  loop.train_and_evaluate(config, str(workdir))
  return config


def test_recipe_fields():
  stage1, easy, stage2, stage3 = (deconvnet_shapes.get_config(a)
                                  for a in ("pretrained", "easy", "stage2", "stage3"))
  assert stage1.data.builder_config == stage2.data.builder_config == "128"
  assert stage3.data.builder_config == "128"
  assert easy.data.builder_config == "single128"
  assert stage1.init_weights == easy.init_weights
  assert stage1.init_weights.endswith("vgg16_bn_shapes_cls")
  assert stage2.init_weights.endswith("deconvnet_shapes_pretrained")
  assert stage3.init_weights.endswith("deconvnet_shapes_stage2")
  assert stage2.optimizer.learning_rate == 3e-3 and stage3.optimizer.learning_rate == 1e-3
  assert stage2.num_train_steps == 8000 and stage3.num_train_steps == 6000
  for config in (stage1, easy, stage2, stage3):
    assert config.data.image_size == 128 and config.model.fc6_size == 3
    assert config.model.width == 0.125
  with pytest.raises(ValueError, match="choose one of the options pretrained, easy, stage2"):
    deconvnet_shapes.get_config("easy,stage2")
  with pytest.raises(ValueError, match="choose one of the options"):
    deconvnet_shapes.get_config("stage2,stage3")


def test_stage2_starts_from_the_whole_stage1_network(tmp_path):
  # (Stage 1's start from the classifier: the ``pretrained`` path, tests/test_weights.py.)
  stage1 = _run(deconvnet_shapes.get_config("pretrained,runlocal"), tmp_path / "s1", init="")
  config = deconvnet_shapes.get_config("stage2,runlocal")
  config.init_weights = str(tmp_path / "s1")
  model = loop.build_model(config, 5)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  fill = lambda tree: jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), tree)  # noqa: E731
  params, stats = init_lib.load_init_weights(config, fill(shapes["params"]),
                                             fill(shapes["batch_stats"]), verbose=False)
  source = init_lib.checkpoint_variables(str(tmp_path / "s1"))
  flat = lambda tree: traverse_util.flatten_dict(tree, sep="/")
  got, want = flat(params), flat(source["params"])
  assert set(got) == set(want)
  for key in want:  # every layer, the decoder and the score layer included
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  for key, value in flat(source["batch_stats"]).items():
    np.testing.assert_array_equal(flat(stats)[key], value, err_msg=key)
  assert stage1.model.width == config.model.width
