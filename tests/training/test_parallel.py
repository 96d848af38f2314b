"""1 vs 4 devices (jit and pmap) and 2 processes give the same parameters (a small
segmentation model; DETR and Mask R-CNN: ``test_parallel_detr.py``,
``test_parallel_mask_rcnn.py``).

Forced host devices need XLA_FLAGS before JAX starts, so the runs happen in subprocesses
(``_training_workers.py``; helpers in ``conftest.py``); this process only compares the saved
arrays.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory, parallel_worker):
  return parallel_worker(tmp_path_factory, "tiny", ("jit_1", "jit_4", "pmap_4"))


def test_four_devices_match_one(device_runs, assert_devices_match):
  assert_devices_match(device_runs)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(training_worker, mode: str, out: str, devices: int, timeout: int) -> None:
  """Runs the worker's ``mode`` as processes 0 and 1 of one jax.distributed job (gloo)."""
  worker, env = training_worker
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, worker, mode, out],
      env=env(devices, SEG_JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
              SEG_JAX_NUM_PROCESSES=2, SEG_JAX_PROCESS_ID=i),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0].decode(errors="replace"))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]


def test_two_processes_match_one(device_runs, tmp_path, assert_same_runs, training_worker):
  out = str(tmp_path / "distributed.npz")
  _two_processes(training_worker, "distributed", out, devices=2, timeout=600)
  assert_same_runs(device_runs["jit_1"], dict(np.load(out)))


@pytest.mark.slow
def test_two_process_train_and_evaluate(tmp_path, training_worker):
  """The real loop on two processes: shards, eval padding, checkpoints, one writer."""
  import json
  workdir = str(tmp_path / "run")
  _two_processes(training_worker, "distributed_loop", workdir, devices=1, timeout=900)
  scores = [json.load(open(os.path.join(workdir, f"scores_{i}.json"))) for i in range(2)]
  assert scores[0] == scores[1]  # both processes computed the same global scores
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
