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
* ``fcn``: the splits of the reference FCNs (fcn.berkeleyvision.org, pytorch-fcn). train =
  SBD ``train.txt`` (8,498 images from SBD's ``img/`` and ``cls/*.mat``); validation =
  ``seg11valid`` (736) = VOC 2011 segmentation ``val.txt`` minus the SBD train ids, images
  and PNG labels from VOC 2011. With VOC 2012 instead of 2011, put the reference's
  ``seg11valid.txt`` id list (fcn.berkeleyvision.org ``data/pascal/seg11valid.txt``) in
  ``manual_dir``: its images and labels are then read from VOC 2012.

Offline use: put ``VOCtrainval_11-May-2012.tar`` (for ``train_aug`` also ``benchmark.tgz``;
for ``fcn`` ``VOCtrainval_25-May-2011.tar`` and ``benchmark.tgz``), or their extracted
folders, in a directory and pass it as ``manual_dir``.
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
VOC2011_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar"
VOC2011_ARCHIVE = "VOCtrainval_25-May-2011.tar"  # extracts to TrainVal/VOCdevkit/VOC2011
SEG11VALID_LIST = "seg11valid.txt"
VOC2012_MARKER, VOC2011_MARKER = "VOCdevkit/VOC2012", "VOCdevkit/VOC2011"
SBD_MARKER = "benchmark_RELEASE/dataset"

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
  if not path.exists():
    raise FileNotFoundError(f"id list {path} not found")
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def seg11valid_ids(voc2011_val: list[str], sbd_train: list[str]) -> list[str]:
  """VOC 2011 segmentation val minus SBD train (1,111 - 375 = 736 ids), in list order."""
  excluded = set(sbd_train)
  return [i for i in voc2011_val if i not in excluded]


def _check_files(items, split: str) -> None:
  """One line naming the first missing image or label of a split (and how many are)."""
  missing = [p for item in items for p in item[1:] if not p.exists()]
  if missing:
    raise FileNotFoundError(f"{missing[0].name} missing ({len(missing)} listed {split} file(s) "
                            f"missing, e.g. in {missing[0].parent})")


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
      VocConfig(name="fcn", description="Reference FCN splits: SBD train (8,498) / "
                "seg11valid (736).", use_sbd=True),
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Place {VOC_ARCHIVE} (from {VOC_URL}) or its extracted VOCdevkit/ folder in "
      f"manual_dir; for train_aug also {SBD_ARCHIVE} (from {SBD_URL}) or benchmark_RELEASE/; "
      f"for fcn {VOC2011_ARCHIVE} (from {VOC2011_URL}) or its TrainVal/VOCdevkit/ folder, and "
      f"{SBD_ARCHIVE}.")

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
    if self.builder_config.name == "fcn":
      return self._fcn_split_generators(dl_manager)
    root = self._locate(dl_manager, VOC_ARCHIVE, VOC_URL, VOC2012_MARKER)
    voc = _find(root, VOC2012_MARKER)
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = _read_ids(lists / "train.txt"), _read_ids(lists / "val.txt")
    items_val = [(i, voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png")
                 for i in voc_val]
    if not self.builder_config.use_sbd:
      items_train = [(i, voc / "JPEGImages" / f"{i}.jpg",
                      voc / "SegmentationClass" / f"{i}.png") for i in voc_train]
    else:
      sbd_root = self._locate(dl_manager, SBD_ARCHIVE, SBD_URL, SBD_MARKER)
      items_train = self._train_aug_items(voc, _find(sbd_root, SBD_MARKER), voc_train, voc_val)
    return {
        "train": self._generate_examples(items_train),
        "validation": self._generate_examples(items_val),
    }

  def _fcn_split_generators(self, dl_manager):
    """SBD train / seg11valid (VOC 2011, or VOC 2012 with a ``seg11valid.txt`` list)."""
    sbd = _find(self._locate(dl_manager, SBD_ARCHIVE, SBD_URL, SBD_MARKER), SBD_MARKER)
    sbd_train = _read_ids(sbd / "train.txt")
    manual = self._manual_path(dl_manager, "")
    have_2011 = self._manual_path(dl_manager, VOC2011_ARCHIVE) is not None or (
        manual is not None and _find(manual, VOC2011_MARKER) is not None)
    id_list = self._manual_path(dl_manager, SEG11VALID_LIST)
    if id_list is not None and not have_2011:
      voc = _find(self._locate(dl_manager, VOC_ARCHIVE, VOC_URL, VOC2012_MARKER),
                  VOC2012_MARKER)
      val_ids = _read_ids(id_list)
      overlap = sorted(set(val_ids) & set(sbd_train))
      if overlap:
        raise ValueError(f"{SEG11VALID_LIST} lists SBD train image {overlap[0]} "
                         f"({len(overlap)} in all): not seg11valid ({id_list})")
    else:
      voc = _find(self._locate(dl_manager, VOC2011_ARCHIVE, VOC2011_URL, VOC2011_MARKER),
                  VOC2011_MARKER)
      val_ids = seg11valid_ids(_read_ids(voc / "ImageSets" / "Segmentation" / "val.txt"),
                               sbd_train)
    items_train = [(i, sbd / "img" / f"{i}.jpg", sbd / "cls" / f"{i}.mat") for i in sbd_train]
    items_val = [(i, voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png")
                 for i in val_ids]
    _check_files(items_train, "fcn train (SBD)")
    _check_files(items_val, "fcn validation (seg11valid)")
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
