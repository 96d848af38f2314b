"""DETR on 1 vs 4 devices (jit and pmap) gives the same parameters: its set loss normalises
by the global box count. (Own module so that xdist runs it beside the other models.)"""

import pytest


@pytest.fixture(scope="module")
def detr_runs(tmp_path_factory, parallel_worker):
  return parallel_worker(tmp_path_factory, "detr", ("jit_1", "jit_4", "pmap_4"))


def test_detr_four_devices_match_one(detr_runs, assert_devices_match):
  assert_devices_match(detr_runs, boxes=True)
