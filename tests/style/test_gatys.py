"""Gatys style transfer: loss terms against numpy/hand values, and the optax pixel loop."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.models.vgg import VGG
from seg_jax.style import gatys, losses
from seg_jax.style import (StyleConfig, content_loss, extract_features, gram_matrix,
                           init_vgg_params, rgb_to_yiq, stage_sizes, style_layer_loss,
                           style_loss, stylize, total_variation_loss, yiq_to_rgb)

# Small but complete: default layers (relu4_2 / relu1_1..relu5_1) on a width-1/8 VGG19.
SMALL = StyleConfig(width=0.125, size=32, steps=20)
# L-BFGS's step holds two forward/backward passes (line search + first evaluation), so its
# test uses a shallower VGG16 cut (relu3_x) to halve compile time.
SHALLOW = dataclasses.replace(SMALL, depth=16, content_layers=("relu3_2",),
                              style_layers=("relu1_1", "relu2_1", "relu3_1"))
# Two-conv network for tests that only exercise the loop's plumbing (fast to compile).
TINY = StyleConfig(width=0.125, size=32, steps=3, content_layers=("relu1_2",),
                   style_layers=("relu1_1",), optimizer="adam")


def _images():
  rng = np.random.default_rng(0)
  content = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  yy, xx = np.mgrid[:48, :48]
  style = np.stack([np.sin(xx / 3), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1) * 0.5 + 0.5
  return content, style.astype(np.float32)


def _gram_loops(features):
  n, h, w, c = features.shape
  gram = np.zeros((n, c, c))
  for b in range(n):
    for i in range(c):
      for j in range(c):
        gram[b, i, j] = sum(features[b, y, x, i] * features[b, y, x, j]
                            for y in range(h) for x in range(w))
  return gram


@pytest.mark.parametrize("normalize,divisor", [(False, 1), (True, 3 * 4 * 5), ("hwc", 60),
                                               ("hw", 12)])
def test_gram_matrix_matches_numpy_loops(normalize, divisor):
  features = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
  expected = _gram_loops(features) / divisor
  np.testing.assert_allclose(gram_matrix(jnp.asarray(features), normalize), expected,
                             rtol=1e-5, atol=1e-5)


def test_gram_matrix_rejects_bad_input():
  with pytest.raises(ValueError, match="normalize"):
    gram_matrix(jnp.ones((1, 2, 2, 3)), normalize="bogus")
  with pytest.raises(ValueError, match="N, H, W, C"):
    gram_matrix(jnp.ones((2, 2, 3)))


def test_content_loss_hand_values():
  features = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  target = jnp.zeros_like(features)
  assert float(content_loss(features, target)) == pytest.approx(15.0)  # 1/2 * 30
  assert float(content_loss(features, target, "mean")) == pytest.approx(7.5)
  with pytest.raises(ValueError, match="shapes differ"):
    content_loss(features, jnp.zeros((1, 2, 2, 2)))


def test_style_layer_loss_is_the_papers_e_l():
  # F = [1, 2] at M = 2 positions, N = 1 channel: G = 5; a target Gram A = 1 gives
  # E = (5 - 1)^2 / (4 * 1^2 * 2^2) = 1. Targets are stored divided by N*M = 2.
  features = jnp.array([1.0, 2.0]).reshape(1, 1, 2, 1)
  assert float(style_layer_loss(features, jnp.full((1, 1, 1), 0.5))) == pytest.approx(1.0)
  # Random case against the unnormalised formula.
  rng = np.random.default_rng(2)
  f, s = rng.normal(size=(2, 1, 3, 4, 6)).astype(np.float32)
  n_l, m_l = 6, 12
  expected = np.sum((_gram_loops(f) - _gram_loops(s)) ** 2) / (4 * n_l**2 * m_l**2)
  target = gram_matrix(jnp.asarray(s), normalize=True)
  np.testing.assert_allclose(style_layer_loss(jnp.asarray(f), target), expected, rtol=1e-4)


def test_style_loss_weights_layers():
  rng = np.random.default_rng(3)
  feats = {k: jnp.asarray(rng.normal(size=(1, 4, 4, c)), jnp.float32)
           for k, c in (("a", 2), ("b", 3))}
  targets = {k: jnp.zeros((1, v.shape[-1], v.shape[-1])) for k, v in feats.items()}
  e_a, e_b = (float(style_layer_loss(feats[k], targets[k])) for k in "ab")
  assert float(style_loss(feats, targets)) == pytest.approx((e_a + e_b) / 2, rel=1e-5)
  assert float(style_loss(feats, targets, {"a": 2.0, "b": 0.5})) == pytest.approx(
      2 * e_a + 0.5 * e_b, rel=1e-5)
  with pytest.raises(ValueError, match="missing"):
    style_loss({"a": feats["a"]}, targets)


def test_total_variation_hand_values():
  image = jnp.array([[0.0, 1.0], [2.0, 4.0]]).reshape(1, 2, 2, 1)
  # vertical: (2-0)^2 = 4, (4-1)^2 = 9; horizontal: (1-0)^2 = 1, (4-2)^2 = 4
  assert float(total_variation_loss(image, "sum")) == pytest.approx(18.0)
  assert float(total_variation_loss(image)) == pytest.approx(6.5 + 2.5)


def test_yiq_roundtrip_and_luminance_matching():
  rgb = jnp.asarray(np.random.default_rng(4).uniform(size=(5, 7, 3)), jnp.float32)
  np.testing.assert_allclose(yiq_to_rgb(rgb_to_yiq(rgb)), rgb, atol=1e-5)
  np.testing.assert_allclose(rgb_to_yiq(jnp.full((3,), 0.4)), [0.4, 0.0, 0.0], atol=1e-5)
  src, ref = jnp.linspace(0, 1, 50), jnp.linspace(0.3, 0.5, 40)
  matched = losses.match_luminance(src, ref)
  assert float(jnp.mean(matched)) == pytest.approx(float(jnp.mean(ref)), abs=1e-5)
  assert float(jnp.std(matched)) == pytest.approx(float(jnp.std(ref)), abs=1e-5)


def test_extract_features_normalises_inside():
  params = init_vgg_params(TINY)
  image = jnp.asarray(_images()[0])[None]
  feats = extract_features(gatys.build_vgg(TINY), params, image, ["relu1_1"])
  mean, std = np.array(gatys.IMAGENET_MEAN), np.array(gatys.IMAGENET_STD)
  manual = VGG(depth=19, width=0.125, include_top=False).apply(
      {"params": params}, (image - mean) / std, capture=["relu1_1"])
  np.testing.assert_allclose(feats["relu1_1"], manual["relu1_1"], rtol=1e-5, atol=1e-5)


def test_config_and_input_validation():
  with pytest.raises(ValueError, match="style_layers"):
    StyleConfig(style_layers=("relu5_4",), depth=16).validate()
  with pytest.raises(ValueError, match="optimizer"):
    StyleConfig(optimizer="sgd").validate()
  with pytest.raises(ValueError, match="content must be"):
    gatys.as_image(np.zeros((2, 3, 4, 5)), "content")
  np.testing.assert_allclose(gatys.as_image(np.full((2, 3), 255, np.uint8)), 1.0)
  assert stage_sizes(StyleConfig(size=512, scales=(256, 128, 1024)), (300, 400)) == [
      128, 256, 512]
  assert gatys.fit_size(300, 400, 200) == (150, 200)


@pytest.mark.parametrize("config", [dataclasses.replace(SHALLOW, optimizer="lbfgs"),
                                    dataclasses.replace(SMALL, optimizer="adam")],
                         ids=["lbfgs", "adam"])
def test_loop_lowers_loss_without_retracing(config):
  content, style = _images()
  params = init_vgg_params(config)
  image, history = stylize(content, style, params=params, config=config)
  assert image.shape == (32, 32, 3) and image.dtype == np.float32
  assert 0.0 <= image.min() and image.max() <= 1.0
  assert history["content"][0] < 1e-3  # started from the content image (sigmoid: clipped)
  assert history["total"][-1] < 0.3 * history["total"][0], history["total"]
  assert len(history["loss"]) == config.steps
  assert history["num_traces"] == 1  # 20 steps, one trace
  _, again = stylize(content, style, params=params, config=config, steps=2)
  assert again["num_traces"] == 0  # same compiled step reused across calls


def test_multiscale_colour_preservation_and_noise_init():
  content, style = _images()
  seen = []
  image, history = stylize(content, style, params=init_vgg_params(TINY), config=TINY,
                           scales=(16,), preserve_color=True, init="noise",
                           callback=lambda info: seen.append((info.size, info.global_step)))
  assert history["stage_sizes"] == [16, 32]
  assert history["num_traces"] == 2  # one per stage shape
  assert seen == [(16, 1), (16, 2), (16, 3), (32, 4), (32, 5), (32, 6)]
  assert image.shape == (32, 32, 3)
  # Luminance-only transfer keeps the content's chroma (I, Q) exactly, up to clipping.
  got, want = rgb_to_yiq(jnp.asarray(image)), rgb_to_yiq(jnp.asarray(content))
  inside = np.all((image > 0.01) & (image < 0.99), axis=-1)
  assert inside.mean() > 0.3
  np.testing.assert_allclose(np.asarray(got)[inside][:, 1:], np.asarray(want)[inside][:, 1:],
                             atol=1e-4)
