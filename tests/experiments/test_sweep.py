"""experiments.sweep: grid expansion, printed commands, a 2-variant tiny sweep with results."""

import csv
import os
import subprocess
import sys

import jax
import pytest

from experiments import sweep
from experiments.configs import apply_overrides, shapes_base

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_grid_and_commands():
  axes = sweep.parse_axes(["model.upsampling=nearest,bilinear", "seed=0,1,2"])
  grid = sweep.expand_grid(axes)
  assert len(grid) == 6 and grid[0] == {"model.upsampling": "nearest", "seed": "0"}
  assert sweep.variant_name(grid[-1]) == "upsampling=bilinear,seed=2"
  commands = sweep.train_commands("encdec_shapes", ["--config.batch_size=8"], "/w", grid[:1])
  assert commands[0].endswith(
      "-m experiments.train --config=encdec_shapes --workdir=/w/upsampling=nearest,seed=0 "
      "--config.batch_size=8 --config.model.upsampling=nearest --config.seed=0")
  with pytest.raises(ValueError, match="KEY=V1,V2"):
    sweep.parse_axes(["model.upsampling"])
  config = shapes_base.get_config()
  changed = sweep.apply_assignment(config, {"seed": "3", "optimizer.learning_rate": "0.5"})
  assert changed.seed == 3 and changed.optimizer.learning_rate == 0.5 and config.seed == 0
  with pytest.raises(ValueError, match="unknown config field 'model.nope'"):
    sweep.apply_assignment(config, {"model.nope": "1"})


def test_apply_overrides_parses_like_the_command_line():
  config = shapes_base.get_config()
  changed = apply_overrides(config, [
      "model.width=1", "optimizer.nesterov=false", "data.image_size=48",
      "init_weights_scopes=('conv1_1', 'conv1_2')", "loss.class_weights=[1.0, 2.5]",
      "init_weights=/tmp/run"])
  assert changed.model.width == 1.0 and isinstance(changed.model.width, float)
  assert changed.optimizer.nesterov is False and changed.data.image_size == 48
  assert changed.init_weights_scopes == ("conv1_1", "conv1_2")  # None fields: a literal
  assert changed.loss.class_weights == [1.0, 2.5] and changed.init_weights == "/tmp/run"
  assert config.model.width == 0.25 and config.init_weights is None  # the input is unchanged
  typed = apply_overrides(config, {"seed": 5, "loss.class_weights": [0.5] * 5})
  assert typed.seed == 5 and typed.loss.class_weights == [0.5] * 5
  for bad, match in ((["seed=x"], "config field 'seed': cannot parse 'x'"),
                     (["seed"], "KEY=VALUE"), (["optimizer.nope=1"], "unknown config field"),
                     ({"model.nope": 1}, "unknown config field 'model.nope'"),
                     (["optimizer.nesterov=maybe"], "optimizer.nesterov")):
    with pytest.raises(ValueError, match=match):
      apply_overrides(config, bad)


LIGHT_CONFIG = """
import ml_collections
def get_config():
  return ml_collections.ConfigDict({"model": {"name": "encoder_decoder", "upsampling": "x"},
                                    "seed": 0})
"""


def test_print_commands_cli(tmp_path):
  # A config file without the data pipeline keeps TensorFlow out of the subprocess.
  config_file = tmp_path / "light.py"
  config_file.write_text(LIGHT_CONFIG)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", f"--config={config_file}",
       "--sweep=model.upsampling=nearest,bed_of_nails,max_unpool,transposed,bilinear",
       "--workdir=/tmp/sw", "--print_commands"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 5
  assert all("--config.model.upsampling=" in line for line in lines)


def test_two_variant_sweep(tmp_path):
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    config = shapes_base.base_config("shapes")
    config.model = {"name": "full_res_fcn", "features": 4, "num_layers": 1}
    shapes_base.apply_runlocal(config)
    config.num_train_steps = 2
    config.num_overlays = 0
    grid = sweep.expand_grid(sweep.parse_axes(["optimizer.learning_rate=0.01,0.0"]))
    rows = sweep.run_sweep(config, grid, str(tmp_path))
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
  assert [r["variant"] for r in rows] == ["learning_rate=0.01", "learning_rate=0.0"]
  for name in ("results.csv", "results.md", "results.png"):
    assert os.path.exists(tmp_path / name)
  with open(tmp_path / "results.csv") as f:
    saved = list(csv.DictReader(f))
  assert [float(r["mean_iou"]) for r in saved] == pytest.approx([r["mean_iou"] for r in rows])
  assert os.path.isdir(tmp_path / "learning_rate=0.01" / "checkpoints")
