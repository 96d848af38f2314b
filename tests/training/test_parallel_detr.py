"""DETR on 1 vs 4 devices (jit and pmap) gives the same parameters: its set loss normalises
by the global box count. (Own module so that xdist runs it beside the other models.)"""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def detr_runs(tmp_path_factory, parallel_worker):
  return parallel_worker(tmp_path_factory, "detr", ("jit_1", "jit_4", "pmap_4"))


def test_detr_four_devices_match_one(detr_runs, assert_same_runs):
  reference = detr_runs["jit_1"]
  assert np.all(np.diff(reference["__losses"]) != 0)
  assert reference["__num_gt"].sum() > 0  # the eval statistics saw real boxes
  for run in ("jit_4", "pmap_4"):
    assert_same_runs(reference, detr_runs[run], run)
