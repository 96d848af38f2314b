"""``voc_segmentation``: PASCAL VOC 2012 semantic segmentation as a TFDS builder.

Labels are the class indices stored in ``SegmentationClass/*.png`` (palette images: the
pixel value *is* the class, 0 = background, 1..20 = objects, 255 = boundary / "difficult",
ignored by losses and metrics).

Configs:
* ``default``: train (1,464) / validation (1,449) from ``ImageSets/Segmentation``.
* ``train_aug``: train = the usual 10,582-image "train_aug" set built with SBD (Hariharan et
  al. 2011), validation = VOC 2012 val. Rule implemented here:
  ``train_aug = (SBD train ∪ SBD val ∪ VOC train) − VOC val``. A label comes from VOC's own
  PNG when the image is in VOC 2012 ``SegmentationClass`` (it has the 255 boundaries),
  otherwise from SBD's ``cls/<id>.mat`` (``GTcls.Segmentation``, classes 0..20, no
  boundary label). Images come from VOC ``JPEGImages`` (SBD's ``img/`` as fallback).

Offline use: put ``VOCtrainval_11-May-2012.tar`` (and for ``train_aug`` ``benchmark.tgz``),
or their extracted folders, in a directory and pass it as ``manual_dir``.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from seg_jax.data import _tf  # noqa: F401  (configures TensorFlow before TFDS uses it)

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
           "semantic_contours/benchmark.tgz")
VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
IGNORE_LABEL = 255


@dataclasses.dataclass
class VocConfig(tfds.core.BuilderConfig):
  use_sbd: bool = False


def _find(root: epath.Path, relative: str) -> epath.Path | None:
  """Finds ``relative`` under ``root`` or one directory level below it."""
  for base in [root, *(p for p in root.iterdir() if p.is_dir())]:
    if (base / relative).exists():
      return base / relative
  return None


def _read_ids(path: epath.Path) -> list[str]:
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_label_png(path: epath.Path) -> np.ndarray:
  """Class-index label ``(H,W)`` uint8 from a VOC palette (or greyscale) PNG."""
  from PIL import Image  # local: only needed while preparing
  with Image.open(io.BytesIO(path.read_bytes())) as img:
    if img.mode not in ("P", "L"):
      raise ValueError(f"{path}: expected a palette PNG of class indices, got mode {img.mode}")
    return np.asarray(img, np.uint8)


def read_sbd_mat(path: epath.Path) -> np.ndarray:
  """Class-index label ``(H,W)`` uint8 from an SBD ``cls/*.mat`` (``GTcls.Segmentation``)."""
  import scipy.io  # local: only needed while preparing SBD
  with path.open("rb") as f:
    mat = scipy.io.loadmat(f, squeeze_me=True, struct_as_record=False)
  return np.asarray(mat["GTcls"].Segmentation, np.uint8)


class VocSegmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation (21 classes, 255 = ignore), optional SBD train_aug."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      VocConfig(name="default", description="VOC 2012 train / val segmentation."),
      VocConfig(name="train_aug", description="SBD-augmented train (10,582) / VOC val.",
                use_sbd=True),
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Place {VOC_ARCHIVE} (from {VOC_URL}) or its extracted VOCdevkit/ folder in "
      f"manual_dir; for train_aug also {SBD_ARCHIVE} (from {SBD_URL}) or benchmark_RELEASE/.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="PASCAL VOC 2012 semantic segmentation; 255 marks ignored pixels.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "segmentation": tfds.features.Image(shape=(None, None, 1),
                                                encoding_format="png"),
            "image_id": tfds.features.Text(),
        }),
        supervised_keys=("image", "segmentation"),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
    )

  def _manual_path(self, dl_manager, name: str) -> epath.Path | None:
    try:
      manual = dl_manager.manual_dir
    except (AssertionError, ValueError):
      return None  # no (or empty) manual_dir
    path = manual / name
    return path if path.exists() else None

  def _locate(self, dl_manager, archive: str, url: str, marker: str) -> epath.Path:
    """Root containing ``marker``: manual extracted folder, manual archive, or download."""
    manual = self._manual_path(dl_manager, "")
    if manual is not None and _find(manual, marker) is not None:
      return manual
    archive_path = self._manual_path(dl_manager, archive)
    if archive_path is not None:
      root = epath.Path(dl_manager.extract(archive_path))
    else:
      root = epath.Path(dl_manager.download_and_extract(url))
    if _find(root, marker) is None:
      raise ValueError(f"{root} does not contain {marker}: not a {archive} layout")
    return root

  def _split_generators(self, dl_manager):
    root = self._locate(dl_manager, VOC_ARCHIVE, VOC_URL, "VOCdevkit/VOC2012")
    voc = _find(root, "VOCdevkit/VOC2012")
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = _read_ids(lists / "train.txt"), _read_ids(lists / "val.txt")
    items_val = [(i, voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png")
                 for i in voc_val]
    if not self.builder_config.use_sbd:
      items_train = [(i, voc / "JPEGImages" / f"{i}.jpg",
                      voc / "SegmentationClass" / f"{i}.png") for i in voc_train]
    else:
      sbd_root = self._locate(dl_manager, SBD_ARCHIVE, SBD_URL, "benchmark_RELEASE/dataset")
      items_train = self._train_aug_items(voc, _find(sbd_root, "benchmark_RELEASE/dataset"),
                                          voc_train, voc_val)
    return {
        "train": self._generate_examples(items_train),
        "validation": self._generate_examples(items_val),
    }

  @staticmethod
  def _train_aug_items(voc, sbd, voc_train, voc_val):
    sbd_ids = _read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt")
    excluded = set(voc_val)
    ids = sorted(set(sbd_ids + voc_train) - excluded)
    items = []
    for i in ids:
      png = voc / "SegmentationClass" / f"{i}.png"
      label = png if png.exists() else sbd / "cls" / f"{i}.mat"
      image = voc / "JPEGImages" / f"{i}.jpg"
      if not image.exists():
        image = sbd / "img" / f"{i}.jpg"
      items.append((i, image, label))
    return items

  def _generate_examples(self, items):
    for image_id, image_path, label_path in items:
      if label_path.suffix == ".mat":
        label = read_sbd_mat(label_path)
      else:
        label = read_label_png(label_path)
      yield image_id, {
          "image": os.fspath(image_path),  # JPEG bytes are stored as they are
          "segmentation": label[..., None],
          "image_id": image_id,
      }
