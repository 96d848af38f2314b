"""The lecture's FCN chain on shapes, end to end at smoke size: a VGG-16 classifier run is
convolutionalised into FCN-32s, FCN-16s starts from the FCN-32s run and FCN-8s from FCN-16s,
each stage through ``config.init_weights=<previous run dir>``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import fcn8s_shapes, fcn16s_shapes, fcn32s_shapes, vgg16_shapes_cls
from seg_jax.models.vgg import fold_adaptive_pool
from seg_jax.ops import bilinear_kernel
from seg_jax.training import init_weights as init_lib
from seg_jax.training import loop

pytestmark = pytest.mark.usefixtures("fast_compile")


def _model_variables(config, num_classes=5):
  model = loop.build_model(config, num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), shapes)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
  root = tmp_path_factory.mktemp("chain")
  runs = {}
  previous = None
  for name, module in (("cls", vgg16_shapes_cls), ("32s", fcn32s_shapes)):
    config = module.get_config("runlocal")
    config.num_train_steps = 1
    config.checkpoint_every = 1
    config.num_overlays = 0
    if previous is not None:
      config.init_weights = str(previous)
    runs[name] = (config, root / name)
    scores = loop.train_and_evaluate(config, str(root / name))
    assert scores  # evaluated at the end
    previous = root / name
  return runs


def test_classifier_is_convolutionalised_into_fcn32s(chain):
  config, _ = chain["32s"]
  config = config.copy_and_resolve_references()
  source = init_lib.checkpoint_variables(str(chain["cls"][1]))["params"]
  variables = _model_variables(config)
  params, _ = init_lib.load_init_weights(config, variables["params"], {}, verbose=False)
  # fc6 is 4x4: the classifier's 7x7 dense fc6 with its adaptive pool (4x4 pool5 of a
  # 128 px image) folded in (the fold itself: tests/models/test_vgg.py, against PyTorch's bins).
  width_in = source["fc6"]["kernel"].shape[0] // 49
  dense = source["fc6"]["kernel"].reshape(7, 7, width_in, -1)
  assert params["fc6"]["kernel"].shape == (4, 4, width_in, dense.shape[-1])
  np.testing.assert_allclose(params["fc6"]["kernel"], fold_adaptive_pool(dense, (4, 4)),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(params["fc7"]["kernel"][0, 0], source["fc7"]["kernel"])
  np.testing.assert_array_equal(params["conv3_2"]["kernel"], source["conv3_2"]["kernel"])
  assert np.all(params["score_fr"]["kernel"] == 7.0)  # fc8 (4 classes) is not a score layer


def test_each_stage_starts_from_the_previous_one(chain, capsys):
  config = fcn16s_shapes.get_config("runlocal")
  config.init_weights = str(chain["32s"][1])
  source = init_lib.checkpoint_variables(str(chain["32s"][1]))["params"]
  params, _ = init_lib.load_init_weights(config, _model_variables(config)["params"], {})
  report = capsys.readouterr().out
  assert "copied" in report and "newly initialised" in report and "score_pool4" in report
  for layer in ("conv1_1", "fc6", "score_fr"):
    np.testing.assert_array_equal(params[layer]["kernel"], source[layer]["kernel"])
  assert np.all(params["score_pool4"]["kernel"] == 7.0)  # new: keeps the model's init
  assert "upscore" in report.split("not used from the run")[1]  # 32s's x32 upsampling

  # 16s -> 8s: a 16s run's variables (here the 16s params just built) carry over the same way.
  config8 = fcn8s_shapes.get_config("runlocal")
  target = _model_variables(config8)
  sixteen = {"params": params, "batch_stats": {}}
  merged, report = init_lib.transfer(sixteen, target)
  for layer in ("conv5_3", "score_fr", "score_pool4", "upscore2"):
    np.testing.assert_array_equal(merged["params"][layer]["kernel"], params[layer]["kernel"])
  assert "params/score_pool3/kernel" in report["new"]
  assert "params/upscore16/kernel" in report["unused"]


def test_trained_chain_keeps_upsampling_bilinear(chain):
  final = init_lib.checkpoint_variables(str(chain["32s"][1]))["params"]
  np.testing.assert_array_equal(final["upscore"]["kernel"], np.asarray(bilinear_kernel(64, 5)))



def test_a_run_of_another_width_is_refused_naming_a_layer(chain):
  config = fcn16s_shapes.get_config("runlocal")
  config.init_weights = str(chain["32s"][1])
  config.model.width = 0.25
  variables = _model_variables(config)
  with pytest.raises(ValueError, match=r"conv1_1/bias has shape \(8,\) in the run, the model expects \(16,\)"):
    init_lib.load_init_weights(config, variables["params"], {})


def test_a_refused_run_leaves_nothing_in_its_workdir(chain, tmp_path):
  config = fcn16s_shapes.get_config("runlocal")
  config.init_weights = str(chain["32s"][1])
  config.model.width = 0.25
  config.num_overlays = 0
  workdir = tmp_path / "fcn16s_wide"
  with pytest.raises(ValueError, match=r"conv1_1/bias has shape \(8,\) in the run"):
    loop.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  # An existing run's directory is left as it was (no config.json written over its own).
  before = sorted(p.name for p in chain["32s"][1].iterdir())
  config_text = (chain["32s"][1] / "config.json").read_text()
  with pytest.raises(ValueError, match="conv1_1/bias has shape"):
    loop.train_and_evaluate(config, str(chain["32s"][1]))
  assert sorted(p.name for p in chain["32s"][1].iterdir()) == before
  assert (chain["32s"][1] / "config.json").read_text() == config_text


def test_missing_previous_stage_names_the_directory(tmp_path):
  config = fcn16s_shapes.get_config("runlocal")
  config.init_weights = str(tmp_path / "no_fcn32s_run")
  with pytest.raises(ValueError, match="init_weights file not found: .*no_fcn32s_run"):
    init_lib.load_init_weights(config, {}, {})
