"""Pretrained VGG import: torchvision/timm/vgg16_bn key layouts, file formats, errors, FCN surgery,
BatchNorm folding.

References are computed in numpy in PyTorch's own layout (NCHW, OIHW, (C, H, W) flatten),
so every transpose and reshape of the importer is checked, not re-used.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from seg_jax import models
from seg_jax.models import vgg_weights
from seg_jax.models.deconvnet import DeconvNet
from seg_jax.models.fcn import FCN
from seg_jax.models.segnet import SegNet
from seg_jax.models.vgg import VGG, convolutionalize

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


pytestmark = pytest.mark.usefixtures("fast_compile")


def torchvision_state(width=1.0, num_classes=10, include_top=True, dtype=np.float32, seed=0):
  """A torchvision-layout VGG16 state dict with He-scaled random values."""
  rng = np.random.default_rng(seed)
  state, cin, index = {}, 3, 0
  for v in CFG16:
    if v == "M":
      index += 1
      continue
    cout = max(1, int(round(v * width)))
    scale = np.sqrt(2 / (9 * cin))
    state[f"features.{index}.weight"] = (rng.standard_normal((cout, cin, 3, 3)) * scale)
    state[f"features.{index}.bias"] = 0.1 * rng.standard_normal(cout)
    cin, index = cout, index + 2
  if include_top:
    hidden = max(1, int(round(4096 * width)))
    for i, (o, n) in zip((0, 3, 6), ((hidden, cin * 49), (hidden, hidden), (num_classes, hidden))):
      state[f"classifier.{i}.weight"] = rng.standard_normal((o, n)) * np.sqrt(2 / n)
      state[f"classifier.{i}.bias"] = 0.1 * rng.standard_normal(o)
  return {k: v.astype(dtype) for k, v in state.items()}


def timm_state(tv):
  """torchvision -> timm layout (fc6/fc7 as convolutions, head.fc)."""
  out = {k: v for k, v in tv.items() if k.startswith("features.")}
  c5 = tv["classifier.0.weight"].shape[1] // 49
  out["pre_logits.fc1.weight"] = tv["classifier.0.weight"].reshape(-1, c5, 7, 7)
  out["pre_logits.fc1.bias"] = tv["classifier.0.bias"]
  out["pre_logits.fc2.weight"] = tv["classifier.3.weight"][:, :, None, None]
  out["pre_logits.fc2.bias"] = tv["classifier.3.bias"]
  out["head.fc.weight"], out["head.fc.bias"] = tv["classifier.6.weight"], tv["classifier.6.bias"]
  return out


def conv3x3_nchw(x, w, b):
  """PyTorch Conv2d(k=3, padding=1): x (N, C, H, W), w (O, I, 3, 3)."""
  xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
  return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def torch_vgg16_forward(state, x_nhwc):
  """Numpy VGG16 forward exactly as torchvision computes it; returns logits."""
  x = x_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
  index = 0
  for v in CFG16:
    if v == "M":
      n, c, h, w = x.shape
      x = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
      index += 1
    else:
      x = np.maximum(conv3x3_nchw(x, state[f"features.{index}.weight"],
                                  state[f"features.{index}.bias"]), 0)
      index += 2
  n, c, h, w = x.shape
  pooled = np.zeros((n, c, 7, 7))
  for i in range(7):
    for j in range(7):
      h0, h1 = i * h // 7, -(-(i + 1) * h // 7)
      w0, w1 = j * w // 7, -(-(j + 1) * w // 7)
      pooled[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
  x = pooled.reshape(n, -1)  # torch.flatten: (C, H, W) order
  for i, relu in ((0, True), (3, True), (6, False)):
    x = x @ state[f"classifier.{i}.weight"].T + state[f"classifier.{i}.bias"]
    x = np.maximum(x, 0) if relu else x
  return x


def test_feature_indices_follow_torchvision():
  idx = vgg_weights.vgg_feature_indices(16)
  assert [idx[k] for k in ("conv1_1", "conv1_2", "conv2_1", "conv3_3", "conv4_1", "conv5_3")] \
      == [0, 2, 5, 14, 17, 28]
  idx19 = vgg_weights.vgg_feature_indices(19)
  assert (idx19["conv3_4"], idx19["conv4_1"], idx19["conv5_4"]) == (16, 19, 34)


def test_full_size_conv_layers_from_safetensors(tmp_path):
  """Real VGG16 conv shapes (float16 file, 30 MB): every layer matches a numpy conv."""
  state = torchvision_state(include_top=False, dtype=np.float16)
  path = str(tmp_path / "vgg16_features.safetensors")
  save_file(state, path)
  params = vgg_weights.load_vgg_params(path, include_top=False)
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
  assert params["conv5_3"]["kernel"].dtype == np.float32
  model = VGG(include_top=False)
  x = np.random.default_rng(1).normal(size=(1, 16, 16, 3)).astype(np.float32)
  taps = [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
  inputs = {t: (f"pool{int(t[4]) - 1}" if t.endswith("_1") else f"relu{t[4]}_{int(t[6]) - 1}")
            for t in taps}
  names = tuple(sorted(set(taps) | {v for v in inputs.values() if v != "pool0"}))
  out = jax.jit(model.apply, static_argnames="capture")({"params": params}, x, capture=names)
  index = vgg_weights.vgg_feature_indices(16)
  for tap in taps:
    source = x if inputs[tap] == "pool0" else np.asarray(out[inputs[tap]])
    w = state[f"features.{index[tap]}.weight"].astype(np.float64)
    b = state[f"features.{index[tap]}.bias"].astype(np.float64)
    expected = conv3x3_nchw(source.transpose(0, 3, 1, 2), w, b).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out[tap], expected, rtol=2e-4, atol=2e-4, err_msg=tap)


@pytest.mark.parametrize("layout,ext", [("torchvision", "npz"), ("timm", "safetensors")])
def test_classifier_matches_numpy_torchvision_forward(tmp_path, layout, ext):
  width = 1 / 16
  tv = torchvision_state(width=width, num_classes=10)
  state = tv if layout == "torchvision" else timm_state(tv)
  path = str(tmp_path / f"vgg16.{ext}")
  if ext == "npz":
    np.savez(path, **state)
  else:
    save_file(state, path)
  params = vgg_weights.load_vgg_params(path, width=width)
  assert params["fc6"]["kernel"].shape == (49 * 32, 256)
  assert params["fc8"]["kernel"].shape == (256, 10)
  x = np.random.default_rng(2).normal(size=(2, 48, 40, 3)).astype(np.float32)
  logits = jax.jit(VGG(width=width, num_classes=10).apply)({"params": params}, x)
  np.testing.assert_allclose(logits, torch_vgg16_forward(tv, x), rtol=1e-4, atol=1e-4)

  conv = vgg_weights.load_vgg_params(path, width=width, convolutional_fc=True)
  assert conv["fc6"]["kernel"].shape == (7, 7, 32, 256)
  expected = convolutionalize(params)
  for name in ("fc6", "fc7", "fc8"):
    np.testing.assert_array_equal(conv[name]["kernel"], expected[name]["kernel"])


def test_fc6_reorders_torch_flatten():
  """fc6 row (h, w, c) of our kernel is torch column c * 49 + h * 7 + w."""
  tv = torchvision_state(width=1 / 16, num_classes=3)
  params = vgg_weights.vgg_params_from_state_dict(tv, width=1 / 16)
  kernel, torch_w = params["fc6"]["kernel"], tv["classifier.0.weight"]
  for h, w, c in [(0, 0, 1), (3, 5, 7), (6, 6, 31)]:
    np.testing.assert_array_equal(kernel[(h * 7 + w) * 32 + c], torch_w[:, c * 49 + h * 7 + w])


def test_errors_name_the_key(tmp_path):
  tv = torchvision_state(width=1 / 16, num_classes=3)
  missing = {k: v for k, v in tv.items() if k != "features.10.weight"}
  with pytest.raises(ValueError, match=r"missing key 'features\.10\.weight' \(VGG16 conv3_1\)"):
    vgg_weights.vgg_params_from_state_dict(missing, width=1 / 16)
  with pytest.raises(ValueError, match=r"'features\.0\.weight'.*shape \(4, 3, 3, 3\), expected"):
    vgg_weights.vgg_params_from_state_dict(tv)  # width 1 expected
  with pytest.raises(ValueError, match="classifier.6.bias"):
    vgg_weights.vgg_params_from_state_dict({k: v for k, v in tv.items() if k != "classifier.6.bias"},
                                       width=1 / 16)
  with pytest.raises(ValueError, match=r"missing key 'features\.16\.weight' \(VGG19 conv3_4\)"):
    vgg_weights.vgg_params_from_state_dict(tv, depth=19, width=1 / 16)
  with pytest.raises(ValueError, match="unexpected key 'features.34.weight'"):
    vgg_weights.vgg_params_from_state_dict({**tv, "features.34.weight": tv["features.0.weight"]},
                                       width=1 / 16)
  bad = tmp_path / "vgg.h5"
  bad.write_bytes(b"")
  with pytest.raises(ValueError, match="unsupported weights format"):
    vgg_weights.load_vgg_params(str(bad))
  with pytest.raises(FileNotFoundError):
    vgg_weights.load_vgg_params(str(tmp_path / "nope.safetensors"))


@pytest.mark.skipif("torch" in sys.modules or __import__("importlib").util.find_spec("torch"),
                    reason="torch installed")
def test_pth_without_torch_says_what_to_do(tmp_path):
  path = tmp_path / "vgg16-397923af.pth"
  path.write_bytes(b"\0")
  with pytest.raises(ValueError, match="needs torch.*safetensors"):
    vgg_weights.load_vgg_params(str(path))


def test_fcn_params_from_vgg():
  width = 1 / 16
  vgg = vgg_weights.vgg_params_from_state_dict(torchvision_state(width=width, num_classes=5),
                                           width=width)
  fcn_shapes = jax.eval_shape(FCN(num_classes=3, width=width).init, jax.random.key(0),
                              jnp.zeros((1, 32, 32, 3)))
  fcn_vars = jax.tree_util.tree_map(lambda s: np.full(s.shape, 7.0, np.float32), fcn_shapes)
  out = vgg_weights.fcn_params_from_vgg(vgg, fcn_vars)
  p = out["params"]
  np.testing.assert_array_equal(p["conv1_1"]["kernel"], vgg["conv1_1"]["kernel"])
  np.testing.assert_array_equal(p["fc6"]["kernel"].reshape(-1, 256), vgg["fc6"]["kernel"])
  np.testing.assert_array_equal(p["fc7"]["kernel"][0, 0], vgg["fc7"]["kernel"])
  assert np.all(p["score_fr"]["kernel"] == 7.0) and np.all(p["upscore8"]["kernel"] == 7.0)
  wide = jax.eval_shape(FCN(num_classes=3, width=1 / 8).init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="conv1_1/kernel"):
    vgg_weights.fcn_params_from_vgg(vgg, jax.tree_util.tree_map(lambda s: np.zeros(s.shape), wide))


def test_init_from_vgg_fills_batchnorm_encoders():
  width = 1 / 16
  vgg = vgg_weights.vgg_params_from_state_dict(torchvision_state(width=width, num_classes=5),
                                           width=width)
  x = jnp.zeros((1, 32, 32, 3))
  for model in (SegNet(width=width), DeconvNet(width=width)):
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    variables = jax.tree_util.tree_map(lambda s: np.full(s.shape, 7.0, np.float32), shapes)
    out = vgg_weights.init_from_vgg(vgg, variables)
    p = out["params"]
    np.testing.assert_array_equal(p["conv4_2"]["kernel"], vgg["conv4_2"]["kernel"])
    assert "bias" not in p["conv4_2"] and np.all(p["conv4_2_bn"]["scale"] == 7.0)
    assert out["batch_stats"] is variables["batch_stats"]
    if isinstance(model, DeconvNet):
      np.testing.assert_array_equal(p["fc6"]["kernel"].reshape(-1, 256), vgg["fc6"]["kernel"])
    else:
      assert np.all(p["score"]["kernel"] == 7.0)


# torchvision ``vgg16_bn`` files into the BatchNorm trunk (VGG-BN, SegNet, DeconvNet): the
# reference is a numpy eval-mode forward *after a biased convolution*, as torchvision computes
# it; our trunk has no conv bias, so this checks that the importer folds it into the mean.
BN_WIDTH = 1 / 16


def vgg16_bn_state(seed=0, num_classes=7):
  rng = np.random.default_rng(seed)
  state, cin, index = {}, 3, 0
  for v in CFG16:
    if v == "M":
      index += 1
      continue
    cout = max(1, round(v * BN_WIDTH))
    state[f"features.{index}.weight"] = rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))
    state[f"features.{index}.bias"] = 0.3 * rng.standard_normal(cout)
    bn = f"features.{index + 1}"
    state[f"{bn}.weight"] = rng.uniform(0.5, 1.5, cout)
    state[f"{bn}.bias"] = 0.1 * rng.standard_normal(cout)
    state[f"{bn}.running_mean"] = 0.2 * rng.standard_normal(cout)
    state[f"{bn}.running_var"] = rng.uniform(0.5, 2.0, cout)
    state[f"{bn}.num_batches_tracked"] = np.array(100)
    cin, index = cout, index + 3
  hidden = max(1, round(4096 * BN_WIDTH))
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
    y = conv3x3_nchw(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"])
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
  variables = vgg_weights.vgg_variables_from_state_dict(state, width=BN_WIDTH, source="bn.npz")
  model = VGG(width=BN_WIDTH, batch_norm=True, include_top=False)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  out = model.apply(variables, x, train=False)
  np.testing.assert_allclose(out, numpy_trunk(state, x).transpose(0, 2, 3, 1), rtol=1e-4,
                             atol=1e-4)


def test_vgg16_bn_file_into_segnet_through_the_family_loader():
  state = vgg16_bn_state()
  model = SegNet(width=BN_WIDTH, num_stages=5, num_classes=3)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), shapes)
  out = models.load_pretrained("segnet", state, target, source="bn.npz", width=BN_WIDTH)
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
    vgg_weights.vgg_variables_from_state_dict(state, depth=19, width=BN_WIDTH, source="bn.npz")


def test_models_without_a_weight_import_say_so():
  with pytest.raises(ValueError, match="model 'unet' cannot import a weights file"):
    models.load_pretrained("unet", {}, {}, source="x.npz")


def test_folding_batch_norm_gives_the_plain_trunk_with_equal_eval_outputs():
  variables = vgg_weights.vgg_variables_from_state_dict(vgg16_bn_state(), width=BN_WIDTH,
                                                        source="bn.npz")
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with_bn = VGG(width=BN_WIDTH, batch_norm=True, include_top=False).apply(variables, x)
  layers = list(vgg_weights.vgg_feature_indices(16))
  plain = vgg_weights.fold_batch_norm(variables["params"], variables["batch_stats"], layers)
  assert not any(k.endswith("_bn") for k in plain)
  without_bn = VGG(width=BN_WIDTH, include_top=False).apply({"params": plain}, x)
  np.testing.assert_allclose(without_bn, with_bn, rtol=1e-4, atol=1e-4)


def test_bn_classifier_run_is_folded_and_convolutionalised_for_fcn():
  source = vgg_weights.vgg_variables_from_state_dict(vgg16_bn_state(), width=BN_WIDTH,
                                                     source="bn.npz")
  shapes = jax.eval_shape(FCN(width=BN_WIDTH, num_classes=3).init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  adapted = models.adapt_transferred("fcn32s", source, target)
  assert adapted["params"]["fc6"]["kernel"].shape == target["params"]["fc6"]["kernel"].shape
  assert "conv1_1_bn" not in adapted["params"] and "conv1_1_bn" not in adapted["batch_stats"]
  assert adapted["params"]["conv1_1"]["bias"].shape == (4,)


def test_bn_classifier_of_128px_images_becomes_an_exact_4x4_fc6():
  """A VGG-16-BN classifier of 128 px images (pool5 4x4, adaptive pool to 7x7) into an FCN
  with ``fc6_size=4``: BN folded into the trunk, the pool folded into fc6. The convolutional
  VGG with those weights gives the classifier's eval logits on a 128 px image."""
  classifier = VGG(width=BN_WIDTH, batch_norm=True, num_classes=4, dropout_rate=0.0)
  x = np.random.default_rng(5).normal(size=(2, 128, 128, 3)).astype(np.float32)
  source = jax.tree.map(np.asarray, dict(classifier.init(jax.random.key(3), x)))
  rng = np.random.default_rng(6)  # non-trivial BN statistics
  source["batch_stats"] = jax.tree.map(
      lambda a: (rng.uniform(0.5, 2.0, a.shape) if a.ndim else a).astype(np.float32),
      source["batch_stats"])
  logits = classifier.apply(source, x)
  shapes = jax.eval_shape(FCN(width=BN_WIDTH, num_classes=3, fc6_size=4).init,
                          jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  adapted = models.adapt_transferred("fcn32s", source, target)
  assert adapted["params"]["fc6"]["kernel"].shape == target["params"]["fc6"]["kernel"].shape
  dense = VGG(width=BN_WIDTH, num_classes=4, convolutional_fc=True, fc6_size=4)
  plain = convolutionalize({k: v for k, v in adapted["params"].items()})  # fc8 -> 1x1
  scores = dense.apply({"params": plain}, x)
  np.testing.assert_allclose(scores[:, 0, 0], logits, rtol=1e-3, atol=1e-4)


def test_bn_classifier_fc_layers_go_into_deconvnet_without_bias():
  """DeconvNet's fc6/fc7 are bias-free convolutions followed by BatchNorm: the classifier's
  dense kernels are convolutionalised, its biases (cancelled by BN's mean) dropped, and the
  run-to-run transfer then copies them."""
  from seg_jax.models.deconvnet import DeconvNet
  from seg_jax.training import init_weights as init_lib
  classifier = VGG(width=BN_WIDTH, batch_norm=True, num_classes=4, dropout_rate=0.0)
  x = np.zeros((1, 64, 64, 3), np.float32)
  source = jax.tree.map(np.asarray, dict(classifier.init(jax.random.key(1), x)))
  target = jax.tree.map(np.asarray, dict(DeconvNet(width=BN_WIDTH, num_classes=5).init(
      jax.random.key(2), x)))
  adapted = models.adapt_transferred("deconvnet", source, target)
  for name in ("fc6", "fc7"):
    assert set(adapted["params"][name]) == {"kernel"}
    assert adapted["params"][name]["kernel"].shape == target["params"][name]["kernel"].shape
  np.testing.assert_array_equal(adapted["params"]["fc6"]["kernel"],
                                source["params"]["fc6"]["kernel"].reshape(
                                    target["params"]["fc6"]["kernel"].shape))
  copied, report = init_lib.transfer(adapted, target)
  np.testing.assert_array_equal(copied["params"]["fc7"]["kernel"][0, 0],
                                source["params"]["fc7"]["kernel"])
  assert {"params/fc6/kernel", "params/fc7/kernel"} <= set(report["copied"])
  assert not [n for n in report["unused"] if n.split("/")[1] in ("fc6", "fc7")]


def test_bn_classifier_fc6_folds_into_deconvnet_3x3_fc6_exactly():
  """``deconvnet_shapes`` (fc6_size=3): the classifier's adaptive pool folds into a 3x3 fc6, which
  on a 3x3 pool5 (a 96 px image) computes the classifier's fc6 pre-activation, bias aside (BN's
  mean subtraction cancels it)."""
  from seg_jax.models.deconvnet import DeconvNet
  classifier = VGG(width=BN_WIDTH, batch_norm=True, num_classes=4, dropout_rate=0.0)
  x = np.random.default_rng(7).normal(size=(2, 96, 96, 3)).astype(np.float32)
  source = jax.tree.map(np.asarray, dict(classifier.init(jax.random.key(4), x)))
  _, captured = classifier.apply(source, x, capture_intermediates=True)
  conv5 = np.maximum(np.asarray(captured["intermediates"]["conv5_3_bn"]["__call__"][0]), 0)
  n, h, w, c = conv5.shape
  pool5 = conv5.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))  # independent 2x2 max-pool
  assert pool5.shape[1:3] == (3, 3)
  fc6 = np.asarray(captured["intermediates"]["fc6"]["__call__"][0]) - source["params"]["fc6"]["bias"]
  shapes = jax.eval_shape(DeconvNet(width=BN_WIDTH, num_classes=5, fc6_size=3).init,
                          jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  adapted = models.adapt_transferred("deconvnet", source, target)
  kernel = adapted["params"]["fc6"]["kernel"]
  assert kernel.shape == target["params"]["fc6"]["kernel"].shape == (3, 3, c, fc6.shape[-1])
  np.testing.assert_allclose(np.einsum("nhwc,hwcf->nf", pool5, kernel), fc6, rtol=1e-4, atol=1e-4)
