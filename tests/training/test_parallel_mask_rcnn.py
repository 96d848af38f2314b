"""Mask R-CNN on 1 vs 4 devices (jit and pmap) gives the same parameters: its RPN/RoI
sampling keys come from the global image index and its losses are normalised over the
global batch. (Own module so that xdist runs it beside the other models.)"""

import pytest


@pytest.fixture(scope="module")
def mask_rcnn_runs(tmp_path_factory, parallel_worker):
  return parallel_worker(tmp_path_factory, "mask_rcnn", ("jit_1", "jit_4", "pmap_4"))


def test_mask_rcnn_four_devices_match_one(mask_rcnn_runs, assert_devices_match):
  assert_devices_match(mask_rcnn_runs, boxes=True)
