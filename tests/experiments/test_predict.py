"""experiments.predict / seg_jax.predict: restore, normalise, tile, draw, COCO results, CLI."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments.configs import unet_shapes
from seg_jax import predict, visualize
from seg_jax.inference import normalize_image
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop
from seg_jax.training.config import base_config

pytestmark = pytest.mark.usefixtures("fast_compile")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run directory as the loop leaves it: config.json and an orbax checkpoint."""
  workdir = str(tmp_path_factory.mktemp("unet_run"))
  config = unet_shapes.get_config("runlocal")  # 32 px, width 1/8, depth 3
  model = loop.build_model(config, 5)
  variables = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  # Non-trivial BatchNorm statistics, so restoring them matters for the result.
  variables["batch_stats"] = jax.tree.map(
      lambda x: np.asarray(x) + RNG.uniform(0.1, 0.5, np.shape(x)).astype(np.float32),
      variables["batch_stats"])
  state = {"step": np.int32(7), "params": variables["params"],
           "batch_stats": variables["batch_stats"],
           "opt_state": {"mu": jax.tree.map(np.zeros_like, variables["params"])}}
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
  checkpointer.save(7, state, force=True)
  checkpointer.close()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return workdir, config, model, variables


def _direct(model, variables, normalized):
  logits = model.apply(variables, jnp.asarray(normalized)[None], train=False)
  return np.asarray(jnp.argmax(logits, -1))[0]


def test_restore_variables_keeps_params_and_batch_stats_only(run):
  workdir, _, _, variables = run
  restored = predict.restore_variables(workdir)
  assert sorted(restored) == ["batch_stats", "params"]
  jax.tree.map(np.testing.assert_array_equal, restored, variables)
  with pytest.raises(ValueError, match=r"step 3 is not a saved checkpoint in .*; saved steps: 7"):
    predict.restore_variables(workdir, step=3)
  template = jax.tree.map(np.zeros_like, variables)
  template["params"]["classifier"]["kernel"] = np.zeros((1, 1, 8, 3), np.float32)
  with pytest.raises(ValueError, match=r"params/classifier/kernel has shape \(1, 1, 8, 5\) in the "
                                       r"checkpoint, the model expects \(1, 1, 8, 3\)"):
    predict.restore_variables(workdir, template=template)
  with pytest.raises(FileNotFoundError, match="no checkpoints in"):
    predict.restore_variables(os.path.join(workdir, "nope"))


def test_semantic_small_images_equal_whole_image_prediction(run):
  workdir, config, model, variables = run
  predictor = predict.load_predictor(workdir)
  assert predictor.class_names == ("background", "circle", "square", "triangle", "star")
  segment = predict.SemanticSegmenter(predictor)
  image = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  normalized = (image / 255.0 - np.array(config.data.mean)) / np.array(config.data.std)
  np.testing.assert_array_equal(segment(image), _direct(model, variables,
                                                        normalized.astype(np.float32)))
  small = RNG.integers(0, 256, (20, 27, 3), dtype=np.uint8)  # mirror-padded to 32 x 32
  padded = np.pad(normalize_image(small, config.data.mean, config.data.std),
                  ((0, 12), (0, 5), (0, 0)), "reflect")
  np.testing.assert_array_equal(segment(small), _direct(model, variables, padded)[:20, :27])


def test_semantic_large_image_is_tiled_with_mirrored_context(run):
  workdir, config, model, variables = run
  segment = predict.SemanticSegmenter(predict.load_predictor(workdir))
  assert (segment.tile, segment.margin) == (24, 4)  # window = the 32 px training size
  image = RNG.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  tile, margin = 24, 4
  padded = np.pad(normalize_image(image, config.data.mean, config.data.std),
                  ((margin, margin + 22), (margin, margin + 2), (0, 0)), "reflect")
  expected = np.zeros((72, 72), np.int64)
  for y in range(0, 50, tile):
    for x in range(0, 70, tile):
      window = padded[y:y + tile + 2 * margin, x:x + tile + 2 * margin]
      expected[y:y + tile, x:x + tile] = _direct(model, variables, window)[margin:-margin,
                                                                            margin:-margin]
  np.testing.assert_array_equal(segment(image), expected[:50, :70])
  with pytest.raises(ValueError, match=r"tile 9 \+ 2 \* margin 3 = 15 px windows do not fit"):
    predict.SemanticSegmenter(predict.load_predictor(workdir), tile=9, margin=3)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "RGB"])
def test_read_image_gives_rgb_uint8(tmp_path, mode):
  grey = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
  rgb = np.stack([grey, 255 - grey, grey // 2], -1)
  if mode in ("L", "LA", "I;16"):
    picture = Image.fromarray(grey).convert(mode)
    expected = np.repeat(grey[..., None], 3, -1)
    if mode == "I;16":  # 16-bit: stored as grey * 257, read back scaled to 0..255
      picture = Image.fromarray(grey.astype(np.uint16) * 257)
  else:
    picture = Image.fromarray(rgb).convert(mode)
    expected = np.asarray(picture.convert("RGB"))
  picture.save(tmp_path / "x.png")
  image = predict.read_image(str(tmp_path / "x.png"))
  assert image.dtype == np.uint8 and image.shape == (6, 5, 3)
  tolerance = 1 if mode == "I;16" else 0
  np.testing.assert_allclose(image.astype(int), expected.astype(int), atol=tolerance)


class FakeInstanceModel(nn.Module):
  """Two valid detections (one with a rectangular mask) and one invalid row."""

  @nn.compact
  def __call__(self, images, train=False):
    offset = self.param("offset", nn.initializers.zeros, ())
    batch, height, width, _ = images.shape
    boxes = jnp.array([[8.0, 4.0, 40.0, 20.0], [0.0, 0.0, 64.0, 64.0], [1, 1, 2, 2]]) + offset
    masks = jnp.zeros((3, height, width), bool).at[0, 4:20, 8:40].set(True)
    rows = {"boxes": boxes, "scores": jnp.array([0.9, 0.3, 0.0]),
            "classes": jnp.array([2, 0, 1]), "valid": jnp.array([True, True, False]),
            "masks": masks}
    return {k: jnp.broadcast_to(v, (batch,) + v.shape) for k, v in rows.items()}


def _fake_predictor():
  config = base_config("shapes", task="instance")  # 64 px, resize 'none'
  config.data.update({"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
  model = FakeInstanceModel()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return predict.Predictor(config, model, variables, ("circle", "square", "triangle", "star"),
                           (1, 2, 3, 4))


def test_detections_map_back_to_input_pixels_as_coco_results():
  from pycocotools import mask as mask_utils
  from pycocotools.coco import COCO
  image = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # shrunk by 0.5 to fit 64
  records = predict.Detector(_fake_predictor())(image, image_id=42)
  assert [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in records] == [
      (42, 3, [16.0, 8.0, 64.0, 32.0], pytest.approx(0.9)),
      (42, 1, [0.0, 0.0, 128.0, 96.0], pytest.approx(0.3))]  # the invalid row is dropped
  expected = np.zeros((96, 128), np.uint8)
  expected[8:40, 16:80] = 1
  np.testing.assert_array_equal(mask_utils.decode(records[0]["segmentation"]), expected)
  assert not mask_utils.decode(records[1]["segmentation"]).any()
  ground_truth = COCO()
  ground_truth.dataset = {"images": [{"id": 42, "height": 96, "width": 128}],
                          "categories": [{"id": i} for i in range(1, 5)], "annotations": []}
  ground_truth.createIndex()
  loaded = ground_truth.loadRes(json.loads(json.dumps(records)))  # the official loader
  assert len(loaded.getAnnIds(imgIds=[42])) == 2
  picture = predict.detection_picture(image, records, ("circle", "square", "triangle", "star"),
                                      (1, 2, 3, 4), score_threshold=0.5)
  assert picture.shape == (96 * 2 + 19, 2 * 128 * 2 + 4, 3)  # upscaled x2 to reach 256 px
  drawn, big = picture[19:, 128 * 2 + 4:], image.repeat(2, 0).repeat(2, 1)
  colour = visualize.palette()[1:][2]  # class 2 ('triangle'), box [32, 16, 160, 80] drawn
  np.testing.assert_array_equal(drawn[60, 32], colour)  # left edge of the box
  np.testing.assert_array_equal(drawn[50, 100], visualize.blend(big[50, 100], colour, 0.45))
  np.testing.assert_array_equal(drawn[150, 100], big[150, 100])  # score 0.3: not drawn


class FakeDetr(nn.Module):
  """DETR's outputs for the detection task: one query, class 1, box (0, 0, 1/2, 1/2) of the
  content (cxcywh relative to the unpadded image, as DETR predicts)."""

  @nn.compact
  def __call__(self, images, pad_mask=None, train=False):
    assert pad_mask is not None and pad_mask.shape == images.shape[:3]
    offset = self.param("offset", nn.initializers.zeros, ())
    batch = images.shape[0]
    logits = jnp.array([[0.0, 5.0, 0.0, 0.0, -5.0]]) + offset  # 4 classes + no-object
    boxes = jnp.array([[0.25, 0.25, 0.5, 0.5]])
    return {"pred_logits": jnp.broadcast_to(logits, (batch, 1, 5)),
            "pred_boxes": jnp.broadcast_to(boxes, (batch, 1, 4))}


def _fake_detr_predictor(resize):
  config = base_config("shapes", task="detection")  # 64 px canvas
  config.data.update({"resize": resize, "min_sizes": (32, 48), "max_size": 64})
  model = FakeDetr()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64),
                                                                                  bool))
  return predict.Predictor(config, model, variables, ("circle", "square", "triangle", "star"),
                           (1, 2, 3, 4))


def detr_get_size_with_aspect_ratio(image_size, size, max_size=None):
  """Transcription of facebookresearch/detr ``datasets/transforms.py``: ``(w, h)`` -> ``(h, w)``."""
  w, h = image_size
  if max_size is not None:
    min_original_size, max_original_size = float(min((w, h))), float(max((w, h)))
    if max_original_size / min_original_size * size > max_size:
      size = int(round(max_size * min_original_size / max_original_size))
  if (w <= h and w == size) or (h <= w and h == size):
    return (h, w)
  if w < h:
    return (int(size * h / w), size)
  return (size, int(size * w / h))


@pytest.mark.parametrize("height,width", [(96, 128), (60, 40), (10, 100), (33, 97), (48, 48),
                                          (200, 150)])
def test_detr_eval_size_follows_detr_and_the_pipeline(height, width):
  from seg_jax.data import augment
  from seg_jax.data._tf import tf
  predictor = _fake_detr_predictor("detr")  # test shorter side max(32, 48), longer <= 64
  want = detr_get_size_with_aspect_ratio((width, height), 48, 64)
  assert predictor.eval_size(height, width) == want
  example = {"image": tf.zeros([height, width, 3]), "label": tf.zeros([height, width], tf.int32),
             "masks": tf.ones([1, height, width], tf.int32), "classes": tf.zeros([1], tf.int32)}
  out = augment.eval_transform(example, image_size=64, resize="detr", ignore_label=255,
                               min_sizes=(32, 48), max_size=64)
  assert tuple(out["resized_size"].numpy()) == want
  # and the pixels are resized as the pipeline does it (bilinear with antialiasing)
  image = RNG.normal(size=(height, width, 3)).astype(np.float32)
  np.testing.assert_allclose(predict._resize(image, *want, antialias=True),
                             tf.image.resize(image, want, "bilinear", antialias=True).numpy(),
                             atol=1e-4)  # float32 summation order


@pytest.mark.parametrize("resize,shape", [("detr", (96, 128)), ("none", (40, 50)),
                                          ("original", (40, 50))])
def test_detector_gives_detr_the_padding_mask(resize, shape):
  """The box is half the content: mapped back, half the input image (with no mask it would
  be half the 64 px canvas)."""
  image = RNG.integers(0, 256, shape + (3,), dtype=np.uint8)
  records = predict.Detector(_fake_detr_predictor(resize))(image, image_id=7)
  height, width = shape
  assert [(r["image_id"], r["category_id"]) for r in records] == [(7, 2)]
  np.testing.assert_allclose(records[0]["bbox"], [0.0, 0.0, width / 2, height / 2], atol=1e-4)


def test_predict_files_detection_outputs(tmp_path):
  for name, size in (("000000000139.png", (40, 50)), ("cat.png", (64, 64))):
    Image.fromarray(RNG.integers(0, 256, size + (3,), dtype=np.uint8)).save(tmp_path / name)
  files = [str(tmp_path / "000000000139.png"), str(tmp_path / "cat.png")]
  output = tmp_path / "out"
  summary = predict.predict_files(_fake_predictor(), files, str(output), score_threshold=0.5)
  assert summary.failed == []
  assert sorted(os.listdir(output)) == ["000000000139_detections.png", "cat_detections.png",
                                        "detections.json"]
  records = json.load(open(output / "detections.json"))
  assert sorted({r["image_id"] for r in records}) == [1, 139]  # numeric stem, else position
  picture = Image.open(output / "cat_detections.png")
  assert picture.size == (2 * 256 + 4, 256 + 19)  # input | detections, upscaled x4, titled


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # compile-bound tiny model, as in-process
  return subprocess.run([sys.executable, "-m", "experiments.predict", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_semantic_folder(run, tmp_path):
  workdir, _, _, _ = run
  inputs = tmp_path / "in"
  inputs.mkdir()
  colour = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  Image.fromarray(colour).save(inputs / "a.png")
  Image.fromarray(RNG.integers(0, 256, (40, 48), dtype=np.uint8)).save(inputs / "b.jpg")
  (inputs / "broken.png").write_bytes(b"not an image")
  output = tmp_path / "out"
  result = _cli(f"--workdir={workdir}", str(inputs), str(tmp_path / "missing.png"),
                f"--output={output}")
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if "error:" in line]
  assert len(errors) == 3 and "Traceback" not in result.stderr
  assert errors[2] == "error: 2 of 4 inputs skipped (see above)"
  assert errors[0] == f"error: {tmp_path / 'missing.png'}: no such file or folder"
  assert errors[1].endswith(f"error: {inputs / 'broken.png'}: UnidentifiedImageError: cannot "
                            f"identify image file '{inputs / 'broken.png'}'")
  assert result.stdout.strip() == f"2 of 4 images predicted into {output}; 2 skipped"
  assert sorted(os.listdir(output)) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
  labels = Image.open(output / "a.png")
  assert labels.mode == "P" and labels.size == (32, 32)
  predictor = predict.load_predictor(workdir)
  np.testing.assert_array_equal(np.asarray(labels),
                                predict.SemanticSegmenter(predictor)(colour))
  assert Image.open(output / "b.png").size == (48, 40)
  assert Image.open(output / "a_overlay.png").size[0] == 3 * 256 + 2 * 4

  result = _cli(f"--workdir={tmp_path / 'no_run'}", str(inputs / "a.png"))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: cannot load run {tmp_path / 'no_run'}: no such directory"]
  result = _cli(f"--workdir={inputs}", str(inputs / "a.png"))  # a folder that is no run
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: cannot load run {inputs}: no config.json in {inputs}; pass --config=NAME")
