"""Command-line behaviour of experiments.train / evaluate: config names, one-line errors."""

import os
import subprocess
import sys

import pytest

from experiments import configs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_config_names_and_paths():
  names = configs.config_names()
  for required in ("unet_shapes", "fcn8s_shapes", "segnet_shapes", "deconvnet_shapes",
                   "encdec_shapes", "full_res_fcn_shapes", "fcn32s_voc", "fcn16s_voc",
                   "fcn8s_voc", "unet_pets", "shapes_base"):
    assert required in names
  path = configs.config_path("unet_shapes:runlocal")
  assert path == os.path.join(configs.CONFIG_DIR, "unet_shapes.py") + ":runlocal"
  assert configs.config_path("some/dir/x.py") == "some/dir/x.py"
  assert configs.config_name(path) == "unet_shapes_runlocal"
  argv = configs.resolve_config_argv(["prog", "--config", "unet_shapes", "--config.seed=1"])
  assert argv == ["prog", "--config", os.path.join(configs.CONFIG_DIR, "unet_shapes.py") + "",
                  "--config.seed=1"]
  with pytest.raises(ValueError, match="unknown config 'nope'; known configs: .*unet_shapes"):
    configs.config_path("nope")


def test_unknown_config_name_is_one_line():
  result = _run("experiments.train", "--config=nope", "--workdir=/tmp/unused")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: unknown config 'nope'")
  assert "Traceback" not in result.stderr


def test_unknown_config_key_is_one_line(tmp_path):
  # A config file without the data pipeline keeps TensorFlow out of the subprocess.
  config_file = tmp_path / "light.py"
  config_file.write_text("import ml_collections\n"
                         "def get_config():\n"
                         "  return ml_collections.ConfigDict({'model': {'name': 'unet'}})\n")
  result = _run("experiments.evaluate", f"--config={config_file}",
                "--config.model.no_such_field=3", "--workdir=/tmp/unused")
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last == "error: unknown config field 'model.no_such_field' (in " \
                 "--config.model.no_such_field=3)"
  assert "Traceback" not in result.stderr


def test_missing_init_weights_names_the_file(tmp_path):
  from seg_jax.training import init_weights as init_lib
  from experiments.configs import fcn8s_voc
  config = fcn8s_voc.get_config()
  config.init_weights = str(tmp_path / "missing_vgg16.safetensors")
  with pytest.raises(ValueError, match="init_weights file not found: .*missing_vgg16"):
    init_lib.load_init_weights(config, {})
