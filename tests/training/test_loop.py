"""``train_and_evaluate`` end to end on the tiny ``shapes`` split with a tiny model.

Covers the outputs in the workdir, restoring a checkpoint for ``evaluate``, exact resumption
after a stop request, reproducibility and the non-finite-loss stop.
"""

import json
import os
import signal

import jax
import numpy as np
import pytest

from experiments.configs import apply_overrides, shapes_base
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop


pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny_config(**overrides):
  config = shapes_base.base_config("shapes")
  config.model = {"name": "full_res_fcn", "features": 4, "num_layers": 2}
  shapes_base.apply_runlocal(config)
  config.num_train_steps = 4
  config.checkpoint_every = 2
  config.eval_every = 2
  config.log_every = 1
  config.optimizer.learning_rate = 1e-2
  return apply_overrides(config, overrides)


def _checkpoint(workdir, step):
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
  try:
    return checkpointer.restore(step=step)
  finally:
    checkpointer.close()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  scores = loop.train_and_evaluate(tiny_config(), workdir)
  return workdir, scores


def test_outputs(full_run):
  workdir, scores = full_run
  assert 0.0 <= scores["mean_iou"] <= 1.0 and set(scores["per_class_iou"]) == {
      "background", "circle", "square", "triangle", "star"}
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["model"]["name"] == "full_res_fcn"
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
  assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]
  assert records[-1]["mean_iou"] == pytest.approx(scores["mean_iou"])
  assert all(np.isfinite(r["loss"]) and r["learning_rate"] >= 0 for r in records
             if r["kind"] == "train")
  overlays = sorted(os.listdir(os.path.join(workdir, "overlays")))
  assert overlays == ["eval_0000002_0.png", "eval_0000002_1.png", "eval_0000004_0.png",
                      "eval_0000004_1.png"]
  from PIL import Image
  # input | ground truth | prediction, each 32 px enlarged 8x to 256 px, 4 px gaps, plus
  # titles above and a legend below (seg_jax.visualize).
  width, height = Image.open(os.path.join(workdir, "overlays", overlays[0])).size
  assert width == 3 * 256 + 2 * 4 and height > 256
  # Only complete checkpoints (orbax writes to a temporary name and renames on commit).
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  for step in ("2", "4"):
    assert os.path.exists(os.path.join(workdir, "checkpoints", step, "_CHECKPOINT_METADATA"))


def test_evaluate_restores_latest_checkpoint(full_run):
  workdir, scores = full_run
  restored = loop.evaluate(tiny_config(), workdir)
  assert restored["mean_iou"] == pytest.approx(scores["mean_iou"], abs=1e-9)
  assert restored["pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"], abs=1e-9)


class _StopAtSecondStep:
  """Stands in for the SIGTERM flag: requests a stop after the second step."""

  def __init__(self, *args, **kwargs):
    self.polls = 0

  @property
  def requested(self):
    self.polls += 1
    return self.polls >= 2

  def restore_handlers(self):
    pass


def test_stop_and_resume_matches_uninterrupted_run(full_run, tmp_path, monkeypatch):
  workdir = str(tmp_path)
  with monkeypatch.context() as patch:
    patch.setattr(checkpoint_lib, "StopSignal", _StopAtSecondStep)
    assert loop.train_and_evaluate(tiny_config(), workdir) == {"preempted_at_step": 2}
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
  scores = loop.train_and_evaluate(tiny_config(), workdir)  # resumes at step 2
  reference = _checkpoint(full_run[0], 4)
  resumed = _checkpoint(workdir, 4)
  jax.tree.map(np.testing.assert_array_equal, reference, resumed)  # exact, incl. opt state
  assert scores["mean_iou"] == full_run[1]["mean_iou"]


def test_non_finite_loss_stops(tmp_path):
  config = tiny_config(**{"loss.class_weights": [float("nan")] * 5, "eval_every": 0})
  with pytest.raises(loop.NonFiniteLossError, match="non-finite loss at step 1$"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_sigterm_sets_stop_flag():
  stop = checkpoint_lib.StopSignal()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested
  finally:
    stop.restore_handlers()
  assert signal.getsignal(signal.SIGTERM) is not stop._handle


def test_half_written_checkpoint_is_ignored(full_run, tmp_path):
  """A save interrupted before orbax's final rename never counts as a checkpoint."""
  import shutil
  directory = tmp_path / "checkpoints"
  shutil.copytree(os.path.join(full_run[0], "checkpoints", "2"), directory / "2")
  partial = directory / "6.orbax-checkpoint-tmp-1234567"
  shutil.copytree(os.path.join(full_run[0], "checkpoints", "4"), partial)
  checkpointer = checkpoint_lib.Checkpointer(str(directory), save_every=1)
  try:
    assert checkpointer.all_steps() == [2] and checkpointer.latest_step() == 2
  finally:
    checkpointer.close()
