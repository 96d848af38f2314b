"""torchvision ``vgg16_bn`` files into the BatchNorm trunk (VGG-BN, SegNet, DeconvNet).

The reference is a numpy forward in PyTorch's layout (NCHW, OIHW) with eval-mode BatchNorm
*after a biased convolution*, as torchvision computes it; our trunk has no conv bias, so this
checks that the importer folds the bias into the running mean exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import models
from seg_jax.models import vgg_weights
from seg_jax.models.segnet import SegNet
from seg_jax.models.vgg import VGG

pytestmark = pytest.mark.usefixtures("fast_compile")

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
WIDTH = 1 / 16


def vgg16_bn_state(seed=0, num_classes=7):
  rng = np.random.default_rng(seed)
  state, cin, index = {}, 3, 0
  for v in CFG16:
    if v == "M":
      index += 1
      continue
    cout = max(1, round(v * WIDTH))
    state[f"features.{index}.weight"] = rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))
    state[f"features.{index}.bias"] = 0.3 * rng.standard_normal(cout)
    bn = f"features.{index + 1}"
    state[f"{bn}.weight"] = rng.uniform(0.5, 1.5, cout)
    state[f"{bn}.bias"] = 0.1 * rng.standard_normal(cout)
    state[f"{bn}.running_mean"] = 0.2 * rng.standard_normal(cout)
    state[f"{bn}.running_var"] = rng.uniform(0.5, 2.0, cout)
    state[f"{bn}.num_batches_tracked"] = np.array(100)
    cin, index = cout, index + 3
  hidden = max(1, round(4096 * WIDTH))
  for i, (o, n) in zip((0, 3, 6), ((hidden, cin * 49), (hidden, hidden), (num_classes, hidden))):
    state[f"classifier.{i}.weight"] = rng.standard_normal((o, n)) * np.sqrt(2 / n)
    state[f"classifier.{i}.bias"] = 0.1 * rng.standard_normal(o)
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def numpy_trunk(state, x_nhwc):
  """torchvision vgg16_bn ``features`` in eval mode, numpy float64; returns pool5 NCHW."""
  x = x_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
  index = 0
  for v in CFG16:
    if v == "M":
      n, c, h, w = x.shape
      x = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
      index += 1
      continue
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    y = np.einsum("nchwij,ocij->nohw", win, state[f"features.{index}.weight"])
    y += state[f"features.{index}.bias"][None, :, None, None]
    bn = f"features.{index + 1}"
    y = (y - state[f"{bn}.running_mean"][None, :, None, None]) / np.sqrt(
        state[f"{bn}.running_var"][None, :, None, None] + 1e-5)
    y = y * state[f"{bn}.weight"][None, :, None, None] + state[f"{bn}.bias"][None, :, None, None]
    x = np.maximum(y, 0)
    index += 3
  return x


def test_vgg16_bn_file_matches_torchvision_eval_forward():
  state = vgg16_bn_state()
  assert vgg_weights.is_batch_norm_state(state)
  variables = vgg_weights.vgg_variables_from_state_dict(state, width=WIDTH, source="bn.npz")
  model = VGG(width=WIDTH, batch_norm=True, include_top=False)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  out = model.apply(variables, x, train=False)
  np.testing.assert_allclose(out, numpy_trunk(state, x).transpose(0, 2, 3, 1), rtol=1e-4,
                             atol=1e-4)


def test_vgg16_bn_file_into_segnet_through_the_family_loader():
  state = vgg16_bn_state()
  model = SegNet(width=WIDTH, num_stages=5, num_classes=3)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), shapes)
  out = models.load_pretrained("segnet", state, target, source="bn.npz", width=WIDTH)
  np.testing.assert_array_equal(out["params"]["conv3_2"]["kernel"],
                                state["features.17.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(out["params"]["conv3_2_bn"]["scale"], state["features.18.weight"])
  np.testing.assert_allclose(out["batch_stats"]["conv3_2_bn"]["mean"],
                             state["features.18.running_mean"] - state["features.17.bias"])
  assert np.all(out["params"]["score"]["kernel"] == 7.0)  # decoder keeps its initialisation
  assert np.all(out["params"]["conv3_2_D"]["kernel"] == 7.0)


def test_plain_vgg_file_is_refused_for_the_wrong_depth_with_one_line():
  state = vgg16_bn_state()
  with pytest.raises(ValueError, match="unexpected key|missing key"):
    vgg_weights.vgg_variables_from_state_dict(state, depth=19, width=WIDTH, source="bn.npz")


def test_models_without_a_weight_import_say_so():
  with pytest.raises(ValueError, match="model 'unet' cannot import a weights file"):
    models.load_pretrained("unet", {}, {}, source="x.npz")


def test_folding_batch_norm_gives_the_plain_trunk_with_equal_eval_outputs():
  variables = vgg_weights.vgg_variables_from_state_dict(vgg16_bn_state(), width=WIDTH,
                                                        source="bn.npz")
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with_bn = VGG(width=WIDTH, batch_norm=True, include_top=False).apply(variables, x)
  layers = list(vgg_weights.vgg_feature_indices(16))
  plain = vgg_weights.fold_batch_norm(variables["params"], variables["batch_stats"], layers)
  assert not any(k.endswith("_bn") for k in plain)
  without_bn = VGG(width=WIDTH, include_top=False).apply({"params": plain}, x)
  np.testing.assert_allclose(without_bn, with_bn, rtol=1e-4, atol=1e-4)


def test_bn_classifier_run_is_folded_and_convolutionalised_for_fcn():
  from seg_jax.models.fcn import FCN
  source = vgg_weights.vgg_variables_from_state_dict(vgg16_bn_state(), width=WIDTH,
                                                     source="bn.npz")
  shapes = jax.eval_shape(FCN(width=WIDTH, num_classes=3).init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  adapted = models.adapt_transferred("fcn32s", source, target)
  assert adapted["params"]["fc6"]["kernel"].shape == target["params"]["fc6"]["kernel"].shape
  assert "conv1_1_bn" not in adapted["params"] and "conv1_1_bn" not in adapted["batch_stats"]
  assert adapted["params"]["conv1_1"]["bias"].shape == (4,)
