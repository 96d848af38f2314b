"""The reference FCN recipe on VOC: config fields, the summed loss, and the staged chain
FCN-32s -> FCN-16s -> FCN-8s run end to end on fake VOC 2011 / SBD folders."""

import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from PIL import Image

from experiments.configs import fcn16s_voc, fcn32s_voc, fcn8s_voc
from seg_jax import losses
from seg_jax.tasks import semantic
from seg_jax.training import init_weights as init_lib
from seg_jax.training import loop
from seg_jax.training.config import base_config

CONFIGS = {"32s": fcn32s_voc, "16s": fcn16s_voc, "8s": fcn8s_voc}


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_defaults_are_the_reference_recipe(variant):
  config = CONFIGS[variant].get_config()
  assert config.data.builder_config == "fcn"
  assert (config.data.resize, config.batch_size) == ("original", 1)
  assert dict(config.data.augmentation) == {"scale_range": (1.0, 1.0), "flip": False,
                                            "crop": False}
  assert config.data.preprocessing == "caffe"
  assert config.loss.reduction == "sum"
  opt = config.optimizer
  assert (opt.name, opt.momentum, opt.weight_decay, opt.decay_all) == ("sgd", 0.99, 5e-4, False)
  assert opt.learning_rate == {"32s": 1e-10, "16s": 1e-12, "8s": 1e-14}[variant]
  assert dict(opt.lr_multipliers) == {"^upscore": 0.0, "/bias$": 2.0}
  assert (config.schedule.name, config.schedule.warmup_steps) == ("constant", 0)
  assert config.num_train_steps == 100_000
  assert config.model.freeze_upsampling == "all"
  assert config.init_weights == {
      "32s": os.path.expanduser("~/.cache/seg_jax/vgg16_caffe.safetensors"), "16s": "/tmp/seg_jax/fcn32s_voc",
      "8s": "/tmp/seg_jax/fcn16s_voc"}[variant]
  other = CONFIGS[variant].get_config("torchvision")
  assert other.data.preprocessing == "torchvision"
  if variant == "32s":
    assert other.init_weights == os.path.expanduser("~/.cache/seg_jax/vgg16.tv_in1k.safetensors")
  with pytest.raises(ValueError, match="unknown config option.*'heavy'"):
    CONFIGS[variant].get_config("heavy")


def _nll_sum_loop(logits, labels, ignore):
  total = 0.0
  for row, label in zip(logits.reshape(-1, logits.shape[-1]).astype(np.float64), labels.ravel()):
    if label != ignore:
      total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[label]
  return total


class _PixelLinear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(4)(x)


def test_summed_loss_is_the_caffe_loss_and_n_times_the_mean():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1, 5, 7, 4)).astype(np.float32) * 2
  labels = rng.integers(0, 4, size=(1, 5, 7))
  labels[rng.random(labels.shape) < 0.3] = 255
  valid = int(np.sum(labels != 255))
  summed = losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), reduction="sum")
  np.testing.assert_allclose(float(summed), _nll_sum_loop(logits, labels, 255), rtol=1e-5)
  grad_sum = jax.grad(lambda l: losses.pixel_cross_entropy(l, labels, reduction="sum"))(logits)
  grad_mean = jax.grad(lambda l: losses.pixel_cross_entropy(l, labels))(logits)
  np.testing.assert_allclose(grad_sum, valid * np.asarray(grad_mean), rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'max'"):
    losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), reduction="max")

  # The task: each image's pixel sum, averaged over the images (Caffe normalize: false).
  images = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  labels2 = np.concatenate([labels, rng.integers(0, 4, size=(1, 5, 7))])
  model = _PixelLinear()
  params = model.init(jax.random.key(0), images)["params"]
  config = base_config()  # ignore_label 255, no class weights
  config.loss.reduction = "sum"
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels2)}
  loss, _ = semantic.loss_fn(model, params, {}, batch, jax.random.key(1), config)
  logits2 = np.asarray(model.apply({"params": params}, images))
  expected = np.mean([_nll_sum_loop(logits2[i], labels2[i], 255) for i in range(2)])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


# Fake data: extracted official folders (VOC 2011 under TrainVal/, SBD benchmark_RELEASE/).
SBD_TRAIN = ["2008_000001", "2008_000002", "2008_000003"]
VOC11_VAL = ["2007_000010", "2008_000002", "2007_000020"]  # 2008_000002 is SBD train
SEG11VALID = ["2007_000010", "2007_000020"]
SIZE = (12, 10)  # one size: one compilation per step function keeps the chain fast


def _label(seed, border):
  label = np.random.default_rng(seed).integers(0, 21, SIZE).astype(np.uint8)
  if border:
    label[0, :] = 255
  return label


def _write_fake_voc(root):
  voc = root / "TrainVal" / "VOCdevkit" / "VOC2011"
  sbd = root / "benchmark_RELEASE" / "dataset"
  for folder in (voc / "JPEGImages", voc / "SegmentationClass",
                 voc / "ImageSets" / "Segmentation", sbd / "img", sbd / "cls"):
    folder.mkdir(parents=True)
  image = Image.fromarray(np.full(SIZE + (3,), 120, np.uint8))
  for i, image_id in enumerate(VOC11_VAL):
    image.save(voc / "JPEGImages" / f"{image_id}.jpg")
    png = Image.fromarray(_label(i, border=True)).convert("P")
    png.save(voc / "SegmentationClass" / f"{image_id}.png")
  (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VOC11_VAL))
  for i, image_id in enumerate(SBD_TRAIN):
    image.save(sbd / "img" / f"{image_id}.jpg")
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": {"Segmentation": _label(10 + i, border=False)}})
    (sbd / "cls" / f"{image_id}.mat").write_bytes(buffer.getvalue())
  (sbd / "train.txt").write_text("\n".join(SBD_TRAIN))
  return _label


def _run(variant, tmp_path, monkeypatch, init_weights=None):
  config = CONFIGS[variant].get_config("runlocal")
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.manual_dir = str(tmp_path / "manual")
  config.num_train_steps = 2
  config.model.width = 1 / 16
  if init_weights is not None:
    config.init_weights = init_weights  # as --config.init_weights=<previous run dir>
  summed, reports = [], []
  finalize, transfer = semantic.finalize_eval, init_lib.transfer
  monkeypatch.setattr(semantic, "finalize_eval",
                      lambda total, info, cfg: summed.append(total) or finalize(total, info, cfg))
  monkeypatch.setattr(init_lib, "transfer", lambda *args, **kwargs: reports.append(
      transfer(*args, **kwargs)) or reports[-1])
  workdir = str(tmp_path / f"fcn{variant}_voc_runlocal")
  scores = loop.train_and_evaluate(config, workdir)
  report = {k: {name.split("/")[1] for name in v} for k, v in reports[0][1].items()} if reports \
      else None
  return workdir, scores, summed[-1]["confusion"], report


TRUNK = {f"conv{s}_{i}" for s, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)}


@pytest.mark.usefixtures("fast_compile")
def test_staged_chain_32s_16s_8s_on_fake_voc(tmp_path, monkeypatch):
  _write_fake_voc(tmp_path / "manual")
  # One confusion matrix over seg11valid at original size: every non-255 pixel counted once.
  valid_pixels = sum(int(np.sum(_label(VOC11_VAL.index(i), True) != 255)) for i in SEG11VALID)

  dir32, scores, confusion, report = _run("32s", tmp_path, monkeypatch)
  assert report is None  # runlocal starts from scratch
  assert int(np.sum(confusion)) == valid_pixels
  assert 0.0 <= scores["mean_iou"] <= 1.0

  dir16, _, confusion, report = _run("16s", tmp_path, monkeypatch, init_weights=dir32)
  assert report["copied"] == TRUNK | {"fc6", "fc7", "score_fr"}
  assert report["new"] == {"upscore2", "score_pool4", "upscore16"}  # zero / bilinear
  assert report["unused"] == {"upscore"} and not report.get("skipped")
  assert int(np.sum(confusion)) == valid_pixels

  _, _, confusion, report = _run("8s", tmp_path, monkeypatch, init_weights=dir16)
  assert report["copied"] == TRUNK | {"fc6", "fc7", "score_fr", "upscore2", "score_pool4"}
  assert report["new"] == {"upscore_pool4", "score_pool3", "upscore8"}
  assert report["unused"] == {"upscore16"} and not report.get("skipped")
  assert int(np.sum(confusion)) == valid_pixels
  with open(os.path.join(dir16, "config.json")) as f:
    assert json.load(f)["data"]["resize"] == "original"
