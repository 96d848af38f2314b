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
         "2008_000002": (18, 22), "2008_000010": (16, 20), "2008_000020": (22, 16)}


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


def _write_voc_tar(path):
  root = "VOCdevkit/VOC2012"
  with tarfile.open(path, "w") as tar:
    for image_id in VOC_TRAIN + VOC_VAL + ["2008_000010"]:  # SBD image also in VOC
      _add(tar, f"{root}/JPEGImages/{image_id}.jpg", _encode(_image(image_id), "JPEG"))
    for image_id in VOC_TRAIN + VOC_VAL:
      png = _encode(_label(image_id, border=True), "PNG", palette=True)
      _add(tar, f"{root}/SegmentationClass/{image_id}.png", png)
    _add(tar, f"{root}/ImageSets/Segmentation/train.txt", "\n".join(VOC_TRAIN).encode())
    _add(tar, f"{root}/ImageSets/Segmentation/val.txt", "\n".join(VOC_VAL).encode())


def _write_sbd_tgz(path):
  root = "benchmark_RELEASE/dataset"
  with tarfile.open(path, "w:gz") as tar:
    for image_id in SBD_TRAIN + SBD_VAL:
      buffer = io.BytesIO()
      scipy.io.savemat(buffer, {"GTcls": {"Segmentation": _label(image_id, border=False),
                                          "CategoriesPresent": np.array([1])}})
      _add(tar, f"{root}/cls/{image_id}.mat", buffer.getvalue())
    _add(tar, f"{root}/img/2008_000020.jpg", _encode(_image("2008_000020"), "JPEG"))
    _add(tar, f"{root}/train.txt", "\n".join(SBD_TRAIN).encode())
    _add(tar, f"{root}/val.txt", "\n".join(SBD_VAL).encode())


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
