"""Readable pictures: palette, nearest upscaling, legends, atomic PNGs, evaluation overlays."""

import os

import numpy as np
import pytest
from PIL import Image

from seg_jax import visualize
from seg_jax.tasks import semantic
from seg_jax.training.config import base_config


def test_palette_is_the_voc_colour_map():
  colors = visualize.palette()
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
              15: (192, 128, 128), 20: (0, 64, 128), 255: (255, 255, 255)}  # VOC's devkit
  for index, rgb in expected.items():
    assert tuple(colors[index]) == rgb
  assert semantic.palette is visualize.palette  # detection/instance import it from there


def test_upscale_is_nearest_neighbour_by_an_integer_factor():
  assert [visualize.upscale_factor(*s) for s in [(64, 64), (200, 300), (10, 100), (300, 1)]] \
      == [4, 1, 3, 1]
  image = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
  np.testing.assert_array_equal(visualize.upscale(image, 3),
                                np.kron(image, np.ones((3, 3, 1), np.uint8)))


def test_blend_and_colorize():
  image = np.full((2, 2, 3), 100, np.uint8)
  colors = np.full((2, 2, 3), 200, np.uint8)
  where = np.array([[True, False], [False, True]])
  out = visualize.blend(image, colors, 0.25, where)
  np.testing.assert_array_equal(out[..., 0], [[125, 100], [100, 125]])
  labels = np.array([[0, 1], [255, 257]])
  np.testing.assert_array_equal(visualize.colorize(labels),
                                visualize.palette()[[[0, 1], [255, 1]]])


def test_legend_swatches_names_and_wrapping():
  names, swatches = visualize.class_legend([np.array([[3, 0], [255, 3]]), np.array([[7]])],
                                           ["bg", "a", "b", "c"])
  assert names == ["bg", "c", "7", "ignore"]
  assert [tuple(s) for s in swatches] == [tuple(visualize.palette()[i]) for i in (0, 3, 7, 255)]
  strip = visualize.legend(names, swatches, 600)
  assert strip.shape[1] == 600 and strip.dtype == np.uint8
  np.testing.assert_array_equal(strip[12, 12], visualize.palette()[0])  # first swatch
  one_row = strip.shape[0]
  narrow = visualize.legend(names, swatches, 60)  # one entry per row
  assert narrow.shape == (4 * (one_row - 6) + 6, 60, 3)


def test_save_png_is_atomic_and_keeps_class_indices(tmp_path):
  labels = np.array([[0, 1, 2], [255, 4, 0]], np.uint8)
  path = visualize.save_png(str(tmp_path / "l.png"), labels, visualize.palette())
  picture = Image.open(path)
  assert picture.mode == "P"
  np.testing.assert_array_equal(np.asarray(picture), labels)
  assert np.asarray(picture.getpalette()[:6]).tolist() == [0, 0, 0, 128, 0, 0]
  with pytest.raises(ValueError, match=r"palette PNG needs a 2-D label map in 0..255, got "
                                       r"shape \(2, 3\) and range 0..300"):
    visualize.save_png(str(tmp_path / "bad.png"), np.array([[0, 300, 1]] * 2),
                       visualize.palette())
  with pytest.raises(OSError):
    visualize.save_png(str(tmp_path / "no_dir" / "x.png"), np.zeros((2, 2, 3), np.uint8))
  assert sorted(os.listdir(tmp_path)) == ["l.png"]  # nothing half-written


def test_semantic_overlays_are_large_titled_and_have_a_legend():
  config = base_config()
  config.data.update({"mean": (0.5,) * 3, "std": (0.25,) * 3})
  batch = {"image": np.zeros((1, 4, 4, 3), np.float32), "label": np.full((1, 4, 4), 255)}
  batch["label"][0, :2] = 2
  (image,) = semantic.overlays(batch, np.ones((1, 4, 4), np.int32),
                               {"class_names": ["bg", "one", "two"]}, config)
  title = 19  # strip above each panel
  panel = 256  # 4 px upscaled x64
  assert image.dtype == np.uint8 and image.shape[1] == 3 * panel + 2 * 4
  assert image.shape[0] > title + panel  # the legend below
  body = image[title:title + panel]
  np.testing.assert_array_equal(body[0, 0], [128, 128, 128])  # denormalised mean grey
  np.testing.assert_array_equal(body[0, panel + 4], visualize.palette()[2])  # ground truth
  np.testing.assert_array_equal(body[200, panel + 4], [255, 255, 255])  # ignore: white
  np.testing.assert_array_equal(body[200, 2 * (panel + 4)], visualize.palette()[1])
  legend = image[title + panel:]
  colours = {tuple(c) for c in legend.reshape(-1, 3)}
  assert {tuple(visualize.palette()[i]) for i in (1, 2)} <= colours  # 'one', 'two' swatches
