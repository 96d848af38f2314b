"""Spatial argument and crop helpers shared by the ops, layers, models, tasks and inference.

* :func:`as_pair` reads an "int or one per spatial axis" argument (kernel size, stride, tile).
* :func:`crop` cuts a window at an offset (FCN's reference crops); :func:`center_crop` cuts
  the centred window (U-Net's skips, labels of a valid net, the kept centre of a tile).
  Both slice axes 1 and 2, so they serve ``(N, H, W, C)`` activations and ``(N, H, W)``
  label maps, jax or numpy alike.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

IntOrPair = Union[int, Sequence[int]]


def _is_integral(value) -> bool:
  if isinstance(value, (int, np.integer)):
    return True
  return isinstance(value, (float, np.floating)) and float(value).is_integer()


def as_pair(value: IntOrPair, name: str) -> tuple[int, int]:
  """``v -> (v, v)``; a pair passes through. Anything else (a string, three values, a
  fraction) is a ValueError naming ``name`` and the value."""
  pair = (value, value) if isinstance(value, (int, np.integer)) else value
  try:
    pair = tuple(pair)
  except TypeError:
    pair = ()
  if len(pair) != 2 or not all(_is_integral(v) for v in pair):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
  return int(pair[0]), int(pair[1])


def crop(x, offset: IntOrPair, size: Sequence[int]):
  """``x[:, top:top+height, left:left+width]`` for ``offset=(top, left)`` (an int for
  both) and ``size=(height, width)``; a window that does not fit is a ValueError."""
  top, left = as_pair(offset, "offset")
  height, width = as_pair(size, "size")
  if (min(top, left) < 0 or x.shape[1] < top + height or x.shape[2] < left + width):
    raise ValueError(f"cannot crop {height}x{width} at offset {(top, left)} from "
                     f"{x.shape[1]}x{x.shape[2]}")
  return x[:, top:top + height, left:left + width]


def center_crop(x, size: Sequence[int]):
  """The centred ``size=(height, width)`` window of axes 1 and 2 (extra rows/columns go
  to the bottom/right when the difference is odd); ``x`` itself when the size matches."""
  height, width = as_pair(size, "size")
  if (height, width) == tuple(x.shape[1:3]):
    return x
  return crop(x, ((x.shape[1] - height) // 2, (x.shape[2] - width) // 2), (height, width))
