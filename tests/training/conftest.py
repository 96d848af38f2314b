"""Shared by the 1-vs-4-device tests (``test_parallel*.py``, one module per model so that
pytest-xdist's ``--dist=loadscope`` runs their trainings on different workers)."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER = os.path.join(os.path.dirname(__file__), "_training_workers.py")


def worker_env(devices: int, **extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update({k: str(v) for k, v in extra.items()})
  return env


@pytest.fixture(scope="session")
def training_worker():
  """(path of ``_training_workers.py``, ``env(devices, **extra)`` for its subprocesses)."""
  return WORKER, worker_env


@pytest.fixture(scope="session")
def parallel_worker():
  """``run(tmp_path_factory, model, runs)``: the worker's runs of ``model`` on 4 forced
  devices (a subprocess: XLA_FLAGS must be set before JAX starts), as ``{run: arrays}``."""
  def run(tmp_path_factory, model: str, runs: tuple) -> dict:
    out = str(tmp_path_factory.mktemp("parallel") / "run")
    subprocess.run([sys.executable, WORKER, f"{model}:{','.join(runs)}", out],
                   env=worker_env(4), check=True, timeout=900)
    return {r: dict(np.load(f"{out}_{r}.npz")) for r in runs}
  return run


@pytest.fixture(scope="session")
def assert_same_runs():
  """Compares two runs' saved arrays: parameters to 1e-5, counts exactly."""
  def check(reference: dict, other: dict, run: str = "") -> None:
    assert set(reference) == set(other)
    for key in reference:
      if key in ("__confusion", "__num_gt"):
        np.testing.assert_array_equal(reference[key], other[key], err_msg=f"{run} {key}")
      else:
        np.testing.assert_allclose(reference[key], other[key], atol=1e-5, rtol=1e-5,
                                   err_msg=f"{run} {key}")
  return check


@pytest.fixture(scope="session")
def assert_devices_match(assert_same_runs):
  """``check(runs, boxes)``: jit and pmap on 4 devices give the 1-device run's arrays, the
  steps changed the model, and (detectors, ``boxes=True``) evaluation saw real boxes."""
  def check(runs: dict, boxes: bool = False) -> None:
    reference = runs["jit_1"]
    assert np.all(np.diff(reference["__losses"]) != 0)  # the steps really changed the model
    if boxes:
      assert reference["__num_gt"].sum() > 0
    for run in ("jit_4", "pmap_4"):
      assert_same_runs(reference, runs[run], run)
  return check
