"""Overlap-tile inference: mirrored windows, exact equality for valid nets, seams for same nets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.inference import make_predict_fn, mirror_indices, normalize_image, predict_tiled
from seg_jax.models.baselines import FullResFCN
from seg_jax.models.unet import UNet, unet_valid_margin, unet_valid_output_size


pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
@pytest.mark.parametrize("size", [1, 2, 5])
def test_mirror_indices_match_np_pad(mode, size):
  data = np.arange(size)
  for pad in (0, 3, 13):  # larger than the axis too
    expected = np.pad(data, pad, mode=mode)
    got = data[mirror_indices(np.arange(-pad, size + pad), size, mode)]
    np.testing.assert_array_equal(got, expected)


def _window_echo(windows):
  """A 'same' net that returns its input: the tiled output must reproduce the image."""
  return np.asarray(windows, np.float32)


@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
def test_tiles_land_in_place(mode):
  image = np.random.default_rng(0).normal(size=(23, 30, 2)).astype(np.float32)
  out = predict_tiled(_window_echo, image, tile=(8, 7), margin=(3, 5), pad_mode=mode,
                      batch_size=3)
  np.testing.assert_array_equal(out, image)
  labels = predict_tiled(_window_echo, image, tile=8, margin=2, argmax=True)
  np.testing.assert_array_equal(labels, np.argmax(image, -1))
  assert labels.dtype == np.int32


def test_valid_style_output_and_bad_shapes():
  image = np.random.default_rng(1).normal(size=(17, 9, 3)).astype(np.float32)
  crop = lambda w: np.asarray(w)[:, 4:-4, 4:-4]  # a "valid" net consuming the margin
  np.testing.assert_array_equal(predict_tiled(crop, image, tile=5, margin=4), image)
  with pytest.raises(ValueError, match="spatial size"):
    predict_tiled(lambda w: np.asarray(w)[:, 1:, 1:], image, tile=5, margin=4)
  with pytest.raises(ValueError, match="pad_mode"):
    predict_tiled(crop, image, tile=5, margin=4, pad_mode="edge")


@pytest.mark.parametrize("height,width", [(32, 40), (30, 37)])
def test_valid_unet_tiled_equals_whole_image(height, width):
  depth, tile = 2, 16  # tile multiple of 2**depth: pooling grids of tiles and image align
  margin = unet_valid_margin(depth)
  assert unet_valid_output_size(tile + 2 * margin, depth) == tile
  model = UNet(num_classes=3, width=1 / 16, depth=depth, padding="valid")
  image = np.random.default_rng(2).normal(size=(height, width, 3)).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 56, 56, 3)))
  tiled = predict_tiled(make_predict_fn(model, variables), image, tile=tile, margin=margin,
                        batch_size=4)
  ext_h, ext_w = -height % tile, -width % tile
  padded = np.pad(image, ((margin, margin + ext_h), (margin, margin + ext_w), (0, 0)), "reflect")
  whole = np.asarray(jax.jit(model.apply)(variables, padded[None]))[0, :height, :width]
  assert tiled.shape == whole.shape == (height, width, 3)
  np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


def test_same_net_margin_removes_seams():
  model = FullResFCN(num_classes=2, width=1 / 8, num_layers=3, dilation=(1, 2, 1))
  radius = (model.receptive_field() - 1) // 2  # 4
  image = np.random.default_rng(3).normal(size=(40, 36, 3)).astype(np.float32)
  tile = 16
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, tile, tile, 3)))
  predict = make_predict_fn(model, variables)
  padded = np.pad(image, ((radius, radius + 8), (radius, radius + 12), (0, 0)), "reflect")
  whole = np.asarray(jax.jit(model.apply)(variables, padded[None]))[0, radius:radius + 40,
                                                             radius:radius + 36]
  tiled = predict_tiled(predict, image, tile=tile, margin=radius, batch_size=2)
  np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
  # Without context the zero padding of each tile shows up along the seams.
  seamy = predict_tiled(make_predict_fn(model, variables), image, tile=tile, margin=0)
  assert np.abs(seamy - whole).max() > 1e-2
  np.testing.assert_allclose(seamy[4:12, 4:12], whole[4:12, 4:12], rtol=1e-5, atol=1e-5)


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_normalize_image_is_the_pipeline_formula():
  image = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  expected = (image.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
  got = normalize_image(image, MEAN, STD)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="got dtype float32"):
    normalize_image(got, MEAN, STD)
  with pytest.raises(ValueError, match="mean/std must be scalars or have 3 channels"):
    normalize_image(image, (0.5, 0.5), STD)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint16, bool])
def test_predict_tiled_rejects_integer_images(dtype):
  image = np.ones((9, 9, 3), dtype)
  with pytest.raises(ValueError) as info:
    predict_tiled(_window_echo, image, tile=4, margin=1)
  message = str(info.value)
  assert "\n" not in message and f"dtype {np.dtype(dtype)}" in message and "mean=" in message


def test_predict_tiled_normalises_uint8_windows_like_the_whole_image():
  image = np.random.default_rng(5).integers(0, 256, (13, 18, 3), dtype=np.uint8)
  out = predict_tiled(_window_echo, image, tile=(5, 4), margin=(2, 3), mean=MEAN, std=STD)
  np.testing.assert_array_equal(out, normalize_image(image, MEAN, STD))
  labels = predict_tiled(_window_echo, image, tile=8, margin=0, argmax=True, mean=MEAN, std=STD)
  np.testing.assert_array_equal(labels, np.argmax(normalize_image(image, MEAN, STD), -1))
  with pytest.raises(ValueError, match="image has dtype float32"):
    predict_tiled(_window_echo, image.astype(np.float32), tile=4, margin=1, mean=MEAN, std=STD)
  with pytest.raises(ValueError, match="needs both mean and std"):
    predict_tiled(_window_echo, image, tile=4, margin=1, mean=MEAN)
