"""1 vs 4 devices (jit and pmap) and 2 processes give the same parameters.

Also for the detectors: DETR (jit and pmap, whose set loss normalises by the global box
count) and Mask R-CNN (jit and pmap: its RPN/RoI sampling keys come from the global image
index and its losses are normalised over the global batch, so the device split does not
matter).

Forced host devices need XLA_FLAGS before JAX starts, so the runs happen in subprocesses
(``_training_workers.py``); this process only compares the saved arrays.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER = os.path.join(os.path.dirname(__file__), "_training_workers.py")


def _env(devices: int, **extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _run_worker(tmp_path_factory, model: str, runs: tuple[str, ...]) -> dict:
  out = str(tmp_path_factory.mktemp("parallel") / "run")
  subprocess.run([sys.executable, WORKER, f"{model}:{','.join(runs)}", out], env=_env(4),
                 check=True, timeout=900)
  return {run: dict(np.load(f"{out}_{run}.npz")) for run in runs}


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory):
  return _run_worker(tmp_path_factory, "tiny", ("jit_1", "jit_4", "pmap_4"))


@pytest.fixture(scope="module")
def detr_runs(tmp_path_factory):
  return _run_worker(tmp_path_factory, "detr", ("jit_1", "jit_4", "pmap_4"))


@pytest.fixture(scope="module")
def mask_rcnn_runs(tmp_path_factory):
  return _run_worker(tmp_path_factory, "mask_rcnn", ("jit_1", "jit_4", "pmap_4"))


def _assert_same(reference: dict, other: dict, run: str = "") -> None:
  assert set(reference) == set(other)
  for key in reference:
    if key in ("__confusion", "__num_gt"):
      np.testing.assert_array_equal(reference[key], other[key], err_msg=f"{run} {key}")
    else:
      np.testing.assert_allclose(reference[key], other[key], atol=1e-5, rtol=1e-5,
                                 err_msg=f"{run} {key}")


# One test per model, not one per run: with pytest-xdist a module fixture is computed by
# every worker that runs one of its tests, so split parametrisations paid the detector
# trainings twice.
def test_four_devices_match_one(device_runs):
  reference = device_runs["jit_1"]
  assert np.all(np.diff(reference["__losses"]) != 0)  # the steps really changed the model
  for run in ("jit_4", "pmap_4"):
    _assert_same(reference, device_runs[run], run)


def test_detr_four_devices_match_one(detr_runs):
  reference = detr_runs["jit_1"]
  assert np.all(np.diff(reference["__losses"]) != 0)
  assert reference["__num_gt"].sum() > 0  # the eval statistics saw real boxes
  for run in ("jit_4", "pmap_4"):
    _assert_same(reference, detr_runs[run], run)


def test_mask_rcnn_four_devices_match_one(mask_rcnn_runs):
  reference = mask_rcnn_runs["jit_1"]
  assert np.all(np.diff(reference["__losses"]) != 0)
  assert reference["__num_gt"].sum() > 0
  for run in ("jit_4", "pmap_4"):
    _assert_same(reference, mask_rcnn_runs[run], run)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(device_runs, tmp_path):
  out = str(tmp_path / "distributed.npz")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, WORKER, "distributed", out],
      env=_env(2, SEG_JAX_COORDINATOR_ADDRESS=f"localhost:{port}", SEG_JAX_NUM_PROCESSES=2,
               SEG_JAX_PROCESS_ID=i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=600)[0].decode(errors="replace"))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  _assert_same(device_runs["jit_1"], dict(np.load(out)))


@pytest.mark.slow
def test_two_process_train_and_evaluate(tmp_path):
  """The real loop on two processes: shards, eval padding, checkpoints, one writer."""
  import json
  workdir = str(tmp_path / "run")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, WORKER, "distributed_loop", workdir],
      env=_env(1, SEG_JAX_COORDINATOR_ADDRESS=f"localhost:{port}", SEG_JAX_NUM_PROCESSES=2,
               SEG_JAX_PROCESS_ID=i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=900)[0].decode(errors="replace"))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  scores = [json.load(open(os.path.join(workdir, f"scores_{i}.json"))) for i in range(2)]
  assert scores[0] == scores[1]  # both processes computed the same global scores
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
