"""``voc_segmentation`` read offline from fake archives in the official directory layout."""

import io
import tarfile

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from seg_jax.data import builders, pipeline, voc

VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033", "2008_000002"]
SBD_TRAIN = ["2007_000039", "2008_000010"]  # overlaps VOC train
SBD_VAL = ["2007_000033", "2008_000020"]  # 2007_000033 is VOC val: excluded from train_aug
SIZES = {"2007_000032": (20, 30), "2007_000039": (26, 18), "2007_000033": (24, 24),
         "2008_000002": (18, 22), "2008_000010": (16, 20), "2008_000020": (22, 16),
         "2008_000030": (20, 20)}
# The reference FCN splits: SBD train / seg11valid = VOC 2011 val minus SBD train.
FCN_SBD_TRAIN = ["2008_000030", "2007_000039", "2008_000010"]
VOC11_VAL = ["2007_000033", "2008_000010", "2008_000002"]  # 2008_000010 is SBD train
SEG11VALID = ["2007_000033", "2008_000002"]


def _label(image_id, border):
  """Random class indices with a 255 border ring (like VOC's object outlines)."""
  h, w = SIZES[image_id]
  rng = np.random.default_rng([int(c) for c in image_id if c.isdigit()])
  label = rng.integers(0, 21, (h, w)).astype(np.uint8)
  if border:
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = 255
  return label


def _image(image_id):
  """A smooth image (JPEG keeps it within a few grey levels)."""
  h, w = SIZES[image_id]
  ys, xs = np.mgrid[:h, :w]
  return np.stack([ys * 200 // h, xs * 200 // w, np.full((h, w), 7 * h)], -1).astype(np.uint8)


def _add(tar, name, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _encode(array, fmt, palette=False):
  img = Image.fromarray(array)
  if palette:
    img = img.convert("P")  # keeps the index values
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
  buffer = io.BytesIO()
  img.save(buffer, format=fmt)
  return buffer.getvalue()


def _write_voc_tar(path, root="VOCdevkit/VOC2012", train=VOC_TRAIN, val=VOC_VAL,
                   extra_images=("2008_000010",)):  # an SBD image also in VOC
  with tarfile.open(path, "w") as tar:
    for image_id in [*train, *val, *extra_images]:
      _add(tar, f"{root}/JPEGImages/{image_id}.jpg", _encode(_image(image_id), "JPEG"))
    for image_id in [*train, *val]:
      png = _encode(_label(image_id, border=True), "PNG", palette=True)
      _add(tar, f"{root}/SegmentationClass/{image_id}.png", png)
    _add(tar, f"{root}/ImageSets/Segmentation/train.txt", "\n".join(train).encode())
    _add(tar, f"{root}/ImageSets/Segmentation/val.txt", "\n".join(val).encode())


def _write_sbd_tgz(path, train=SBD_TRAIN, val=SBD_VAL, images=("2008_000020",)):
  root = "benchmark_RELEASE/dataset"
  with tarfile.open(path, "w:gz") as tar:
    for image_id in [*train, *val]:
      buffer = io.BytesIO()
      scipy.io.savemat(buffer, {"GTcls": {"Segmentation": _label(image_id, border=False),
                                          "CategoriesPresent": np.array([1])}})
      _add(tar, f"{root}/cls/{image_id}.mat", buffer.getvalue())
    for image_id in images:
      _add(tar, f"{root}/img/{image_id}.jpg", _encode(_image(image_id), "JPEG"))
    _add(tar, f"{root}/train.txt", "\n".join(train).encode())
    _add(tar, f"{root}/val.txt", "\n".join(val).encode())


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("manual")
  _write_voc_tar(path / voc.VOC_ARCHIVE)
  _write_sbd_tgz(path / voc.SBD_ARCHIVE)
  return str(path)


def _read_split(builder, split):
  examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return {ex["image_id"].decode(): ex for ex in examples}


def test_voc_labels_are_read_exactly(manual_dir, tmp_path):
  cfg = pipeline.default_data_config("voc_segmentation", data_dir=str(tmp_path),
                                     manual_dir=manual_dir, download=False, image_size=32)
  builder = builders.get_builder(cfg)
  assert builder.info.features["segmentation"].shape == (None, None, 1)
  for split, ids in (("train", VOC_TRAIN), ("validation", VOC_VAL)):
    examples = _read_split(builder, split)
    assert sorted(examples) == sorted(ids)
    for image_id, ex in examples.items():
      np.testing.assert_array_equal(ex["segmentation"][..., 0], _label(image_id, border=True))
      assert ex["image"].shape == SIZES[image_id] + (3,)
      assert np.abs(ex["image"].astype(int) - _image(image_id)).mean() < 4  # JPEG is lossy

  # Eval pipeline: images fit in 32 px, so labels are exact, padded with ignore.
  batches = list(pipeline.get_dataset(cfg, split="validation", train=False,
                                      global_batch_size=2, process_index=0, process_count=1))
  assert len(batches) == 1 and batches[0]["valid"].all()
  expected = []
  for image_id in VOC_VAL:
    want = np.full((32, 32), 255, np.int32)
    h, w = SIZES[image_id]
    want[:h, :w] = _label(image_id, border=True)
    expected.append(want)
  for label in batches[0]["label"]:
    assert sum(np.array_equal(label, want) for want in expected) == 1
  info = pipeline.dataset_info(cfg)
  assert info["num_classes"] == 21 and info["class_names"][15] == "person"
  assert info["num_examples"] == {"train": 2, "validation": 2}


def test_train_aug_combines_sbd_and_voc(manual_dir, tmp_path):
  builder = voc.VocSegmentation(config="train_aug", data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  train = _read_split(builder, "train")
  # (SBD train ∪ SBD val ∪ VOC train) − VOC val
  assert sorted(train) == ["2007_000032", "2007_000039", "2008_000010", "2008_000020"]
  for image_id, ex in train.items():
    from_voc = image_id in VOC_TRAIN  # VOC's own PNG (with 255 borders) wins
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _label(image_id, from_voc))
    assert ex["image"].shape == SIZES[image_id] + (3,)
  assert sorted(_read_split(builder, "validation")) == sorted(VOC_VAL)


@pytest.fixture(scope="module")
def fcn_manual_dir(tmp_path_factory):
  """VOC 2011 (its own top folder, TrainVal/) and SBD as the official archives."""
  path = tmp_path_factory.mktemp("manual_fcn")
  _write_voc_tar(path / voc.VOC2011_ARCHIVE, root="TrainVal/VOCdevkit/VOC2011",
                 train=["2007_000032"], val=VOC11_VAL, extra_images=())
  _write_sbd_tgz(path / voc.SBD_ARCHIVE, train=FCN_SBD_TRAIN, val=["2008_000020"],
                 images=FCN_SBD_TRAIN + ["2008_000020"])
  return str(path)


def _fcn_data_config(manual_dir, data_dir, **overrides):
  fields = dict(builder_config="fcn", data_dir=str(data_dir), manual_dir=manual_dir,
                download=False, resize="original", preprocessing="caffe",
                augmentation={"scale_range": (1.0, 1.0), "flip": False, "crop": False})
  return pipeline.default_data_config("voc_segmentation", **{**fields, **overrides})


def test_fcn_splits_are_sbd_train_and_seg11valid(fcn_manual_dir, tmp_path):
  assert voc.seg11valid_ids(VOC11_VAL, FCN_SBD_TRAIN) == SEG11VALID
  builder = builders.get_builder(_fcn_data_config(fcn_manual_dir, tmp_path))
  train = _read_split(builder, "train")
  assert sorted(train) == sorted(FCN_SBD_TRAIN)
  for image_id, ex in train.items():  # SBD cls/*.mat labels, SBD img/ images
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _label(image_id, border=False))
    assert ex["image"].shape == SIZES[image_id] + (3,)
  val = _read_split(builder, "validation")
  assert sorted(val) == sorted(SEG11VALID)
  for image_id, ex in val.items():  # VOC 2011 PNG labels with their 255 borders
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _label(image_id, border=True))


def test_fcn_eval_sees_whole_images_at_original_size_in_caffe_input(fcn_manual_dir, tmp_path):
  cfg = _fcn_data_config(fcn_manual_dir, tmp_path)
  batches = list(pipeline.get_dataset(cfg, split="validation", train=False,
                                      global_batch_size=1, process_index=0, process_count=1))
  assert len(batches) == len(SEG11VALID)
  seen = set()
  for batch in batches:
    assert batch["valid"].tolist() == [True]
    label = batch["label"][0]
    image_id = next(i for i in SEG11VALID if SIZES[i] == label.shape)  # sizes differ
    seen.add(image_id)
    assert batch["image"].shape == (1,) + SIZES[image_id] + (3,)  # no resize, no padding
    np.testing.assert_array_equal(label, _label(image_id, border=True))
    # Caffe input: BGR, 0..255, minus the BGR mean pixel (JPEG is lossy: a few grey levels).
    expected = _image(image_id)[..., ::-1].astype(np.float32) - np.float32(
        pipeline.CAFFE_BGR_MEAN)
    assert np.abs(batch["image"][0] - expected).mean() < 4
    rgb = pipeline.denormalize(batch["image"][0], cfg)
    assert np.abs(rgb.astype(int) - _image(image_id)).mean() < 4
  assert seen == set(SEG11VALID)
  train = next(pipeline.get_dataset(cfg, split="train", train=True, global_batch_size=1,
                                    process_index=0, process_count=1))
  image_id = next(i for i in FCN_SBD_TRAIN if SIZES[i] == train["label"].shape[1:])
  np.testing.assert_array_equal(train["label"][0], _label(image_id, border=False))
  with pytest.raises(ValueError, match="batch_size must be 1, got 2"):
    pipeline.get_dataset(cfg, split="validation", train=False, global_batch_size=2,
                         process_index=0, process_count=1)
  cropping = _fcn_data_config(fcn_manual_dir, tmp_path,
                              augmentation={"scale_range": (0.5, 2.0), "crop": True})
  with pytest.raises(ValueError, match="crop=False and scale_range=.1.0, 1.0."):
    pipeline.get_dataset(cropping, split="train", train=True, global_batch_size=1,
                         process_index=0, process_count=1)


def test_fcn_with_voc2012_and_a_seg11valid_list(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_voc_tar(manual / voc.VOC_ARCHIVE, val=VOC11_VAL + ["2008_000020"], extra_images=())
  _write_sbd_tgz(manual / voc.SBD_ARCHIVE, train=FCN_SBD_TRAIN, val=[], images=FCN_SBD_TRAIN)
  (manual / voc.SEG11VALID_LIST).write_text("\n".join(SEG11VALID) + "\n")
  builder = builders.get_builder(_fcn_data_config(str(manual), tmp_path / "data"))
  assert sorted(_read_split(builder, "validation")) == sorted(SEG11VALID)
  assert sorted(_read_split(builder, "train")) == sorted(FCN_SBD_TRAIN)
  (manual / voc.SEG11VALID_LIST).write_text("2008_000010\n")  # an SBD train image
  with pytest.raises(ValueError, match="seg11valid.txt lists SBD train image 2008_000010"):
    builders.get_builder(_fcn_data_config(str(manual), tmp_path / "data2"))


def test_fcn_missing_sbd_image_is_one_line(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_voc_tar(manual / voc.VOC2011_ARCHIVE, root="TrainVal/VOCdevkit/VOC2011",
                 train=[], val=VOC11_VAL, extra_images=())
  _write_sbd_tgz(manual / voc.SBD_ARCHIVE, train=FCN_SBD_TRAIN, val=[],
                 images=FCN_SBD_TRAIN[1:])
  with pytest.raises(FileNotFoundError) as error:
    builders.get_builder(_fcn_data_config(str(manual), tmp_path / "data"))
  message = str(error.value)
  assert "\n" not in message and "(ValueError" not in message
  assert "2008_000030.jpg missing (1 listed fcn train (SBD) file(s)" in message
