"""as_pair, crop and center_crop against plain slicing."""

import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.ops.spatial import as_pair, center_crop, crop


@pytest.mark.parametrize("value,want", [
    (3, (3, 3)), (np.int64(2), (2, 2)), ((1, 4), (1, 4)), ([5, 6], (5, 6)),
    (np.array([7, 8]), (7, 8)), ((2.0, 3), (2, 3)),
])
def test_as_pair(value, want):
  got = as_pair(value, "stride")
  assert got == want and all(type(v) is int for v in got)


@pytest.mark.parametrize("bad", ["SAME", (1, 2, 3), (1.5, 2), None, ()])
def test_as_pair_rejects_naming_argument_and_value(bad):
  with pytest.raises(ValueError, match=r"tile must be an int or a pair of ints, got"):
    as_pair(bad, "tile")


def test_crop_and_center_crop_equal_slicing():
  x = np.arange(2 * 7 * 6 * 3).reshape(2, 7, 6, 3)
  np.testing.assert_array_equal(crop(x, (2, 1), (4, 3)), x[:, 2:6, 1:4])
  np.testing.assert_array_equal(crop(x, 1, (3, 3)), x[:, 1:4, 1:4])
  # Odd differences leave the extra row/column at the bottom/right (U-Net, labels).
  np.testing.assert_array_equal(center_crop(x, (4, 3)), x[:, 1:5, 1:4])
  labels = jnp.asarray(x[..., 0])
  np.testing.assert_array_equal(center_crop(labels, (3, 6)), x[:, 2:5, :, 0])
  assert center_crop(x, (7, 6)) is x


@pytest.mark.parametrize("offset,size", [((0, 0), (8, 6)), ((5, 0), (3, 3)), ((-1, 0), (2, 2))])
def test_crop_rejects_windows_that_do_not_fit(offset, size):
  with pytest.raises(ValueError, match="cannot crop"):
    crop(np.zeros((1, 7, 6, 1)), offset, size)


def test_center_crop_rejects_larger_size():
  with pytest.raises(ValueError, match="cannot crop 8x6"):
    center_crop(np.zeros((1, 7, 6)), (8, 6))
