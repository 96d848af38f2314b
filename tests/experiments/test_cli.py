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


def _one_line_error(result, starts_with):
  """Exit code 2 and a last stderr line ``error: ...``, without traceback."""
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(starts_with), last
  assert "Traceback" not in result.stderr
  return last


def test_train_bad_workdir_and_batch_size(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  result = _run("experiments.train", "--config=unet_shapes:runlocal", f"--workdir={a_file}")
  _one_line_error(result, f"error: workdir {a_file} is a file, not a directory")
  # --verbose shows the traceback, the last line stays the one-line error.
  result = _run("experiments.train", "--config=unet_shapes:runlocal", "--config.batch_size=0",
                f"--workdir={tmp_path / 'run'}", "--verbose")
  assert result.returncode == 2 and "Traceback" in result.stderr
  assert result.stderr.strip().splitlines()[-1] == "error: batch_size must be positive, got 0"


def test_evaluate_checks_the_step(tmp_path):
  os.makedirs(tmp_path / "checkpoints" / "2")
  result = _run("experiments.evaluate", "--config=unet_shapes:runlocal",
                f"--workdir={tmp_path}", "--step=999")
  _one_line_error(result, f"error: step 999 is not a saved checkpoint in "
                          f"{tmp_path / 'checkpoints'}; saved steps: 2")
  result = _run("experiments.evaluate", "--config=unet_shapes:runlocal",
                f"--workdir={tmp_path / 'nothing'}")
  _one_line_error(result, "error: no checkpoints in ")


def test_sweep_and_demo_ops_errors(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  result = _run("experiments.sweep", "--config=unet_shapes:runlocal",
                "--sweep=model.upsampling=transposed", f"--workdir={a_file}")
  _one_line_error(result, "error: ")
  assert str(a_file) in result.stderr.strip().splitlines()[-1]
  result = _run("experiments.demo_ops", "stray")
  _one_line_error(result, "error: unexpected arguments: stray")


def test_cli_error_classification():
  from experiments import cli
  assert cli.is_expected(ValueError("x")) and cli.is_expected(FileNotFoundError("x"))
  assert not cli.is_expected(KeyError("x")) and not cli.is_expected(TypeError("x"))
  import pickle
  assert cli.is_expected(pickle.UnpicklingError("Weights only load failed"))
  SafetensorError = type("SafetensorError", (Exception,), {})  # matched by name
  assert cli.is_expected(SafetensorError("x"))
  assert cli.one_line(SafetensorError("header too large\nmore")) == \
      "SafetensorError: header too large"
  assert cli.one_line(ValueError("first\nsecond")) == "first"


def test_traceback_switches(monkeypatch):
  from experiments import cli
  monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
  assert not cli.traceback_wanted()
  monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
  assert cli.traceback_wanted()
  monkeypatch.setenv(cli.TRACEBACK_ENV, "0")
  assert not cli.traceback_wanted()
