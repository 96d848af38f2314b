"""experiments.plot: curves from metrics.jsonl; sweep bar charts share the style."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seg_jax import charts

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _records():
  records = [{"step": s, "kind": "train", "loss": 2.0 / s, "learning_rate": 1e-3}
             for s in (10, 20, 30, 40)]
  records += [{"step": 20, "kind": "eval", "mean_iou": 0.4, "pixel_accuracy": 0.8,
               "per_class_iou": {"a": 0.1}},
              {"step": 40, "kind": "eval", "mean_iou": "nan", "pixel_accuracy": 0.9}]
  records.append({"step": 30, "kind": "train", "loss": 0.05})  # resumed: the step again
  return records


def test_series_keeps_finite_numbers_of_the_kind_and_the_last_repeat():
  steps, values = charts.series(_records(), "loss", "train")
  np.testing.assert_array_equal(steps, [10, 20, 30, 40])
  np.testing.assert_allclose(values, [0.2, 0.1, 0.05, 0.05])
  steps, values = charts.series(_records(), "mean_iou", "eval")  # "nan" string dropped
  assert steps.tolist() == [20] and values.tolist() == [0.4]


def test_plot_metrics_draws_the_panels_present(tmp_path):
  path = str(tmp_path / "curves.png")
  panels = charts.plot_metrics(_records(), path, title="run")
  assert panels == ["training loss", "mean IU (eval)", "pixel accuracy (eval)"]
  width, height = Image.open(path).size
  assert (width, height) == (1200, 320)  # 4 x 3.2 inches per panel at 100 dpi
  assert [f for f in os.listdir(tmp_path)] == ["curves.png"]
  with pytest.raises(ValueError, match="no loss, mean_iou"):
    charts.plot_metrics([{"step": 1, "kind": "train", "other": 1.0}], path)


def test_bar_chart(tmp_path):
  path = charts.bar_chart(["a", "b=long label"], [0.5, 0.75], str(tmp_path / "bars.png"), "IU")
  assert Image.open(path).size == (400, 350)


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "experiments.plot", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in _records()) + '{"step": 50, "ki')  # killed
  result = _run(f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (f"wrote {tmp_path / 'curves.png'} (training loss, mean IU "
                                   "(eval), pixel accuracy (eval))")
  result = _run(f"--workdir={tmp_path / 'missing'}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: no metrics.jsonl in {tmp_path / 'missing'} (train a run there first)"]
