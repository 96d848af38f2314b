"""benchmark_infer: per-image inference time of configs as they build their models."""

import subprocess
import sys

import pytest

from experiments import configs
from seg_jax.benchmarks import infer_cost

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_rows_follow_each_configs_model_and_image_size(capsys):
  named = [(name, configs.load_config(name)) for name in
           ("unet_shapes:runlocal", "segnet_shapes:pretrained")]
  named[1][1].model.width = 0.0625  # keep the 128 px model small
  rows = infer_cost.run(named, 5, batch_size=2, repeats=2)
  assert [r["image_size"] for r in rows] == [32, 128]  # runlocal: the tiny 32 px split
  assert all(r["seconds_per_image"] > 0 for r in rows)
  out = capsys.readouterr().out
  assert "| `unet_shapes:runlocal` | 32 |" in out and "| `segnet_shapes:pretrained` | 128 |" in out


def test_one_image_size_for_every_config(capsys):
  named = [("unet_shapes:runlocal", configs.load_config("unet_shapes:runlocal"))]
  rows = infer_cost.run(named, 5, batch_size=1, repeats=1, image_size=48)
  assert rows[0]["image_size"] == 48
  assert "| `unet_shapes:runlocal` | 48 |" in capsys.readouterr().out
  with pytest.raises(ValueError, match="image_size must be >= 0 .*got -1"):
    infer_cost.run(named, 5, image_size=-1)


def test_detection_configs_are_refused():
  with pytest.raises(ValueError, match="detr_shapes is a 'detection' config"):
    infer_cost.run([("detr_shapes", configs.load_config("detr_shapes"))], 5)


def test_bad_sizes():
  with pytest.raises(ValueError, match="batch_size and repeats must be >= 1, got 0, 1"):
    infer_cost.time_forward(None, 32, batch_size=0, repeats=1)


def test_cli_unknown_config_is_one_line():
  result = subprocess.run([sys.executable, "-m", "experiments.benchmark_infer",
                           "--configs=unet_shapes,nope"], capture_output=True, text=True)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("error: unknown config 'nope'")
