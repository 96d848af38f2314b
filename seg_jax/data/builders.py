"""Which TFDS builder serves each dataset name, where its files live, and how it gets there.

``shapes`` is prepared automatically on first use (seconds, offline). VOC and Pets are
downloaded with TFDS' download manager when allowed (``data_config.download``) and the
network is there; otherwise a one-line error says how to provide the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import urllib.parse
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from seg_jax.data import coco, pets, shapes, voc
from seg_jax.data import config as data_config_lib


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static facts about one dataset name."""

  class_names: tuple[str, ...]  # semantic classes, index = label value
  train_split: str
  eval_split: str
  has_instances: bool = False
  instance_class_names: tuple[str, ...] = ()


def _spec(name: str, class_names: tuple[str, ...],
          instance_class_names: tuple[str, ...] = ()) -> DatasetSpec:
  """The class names here, the rest from the config's table (``seg_jax.data.config``)."""
  facts = data_config_lib.dataset_facts(name)
  if len(class_names) != facts.num_classes:
    raise AssertionError(f"{name}: {len(class_names)} class names, seg_jax.data.config says "
                         f"{facts.num_classes}")
  return DatasetSpec(class_names, facts.train_split, facts.eval_split, facts.has_instances,
                     instance_class_names)


DATASETS: dict[str, DatasetSpec] = {
    "shapes": _spec("shapes", ("background",) + shapes.SHAPE_NAMES, shapes.SHAPE_NAMES),
    "voc_segmentation": _spec("voc_segmentation", voc.VOC_CLASS_NAMES),
    "oxford_iiit_pet": _spec("oxford_iiit_pet", pets.PET_CLASS_NAMES),
    "coco_instances": _spec("coco_instances", ("background",) + coco.COCO_CLASS_NAMES,
                            coco.COCO_CLASS_NAMES),
}


def dataset_spec(name: str) -> DatasetSpec:
  data_config_lib.dataset_facts(name)  # the unknown-name error
  return DATASETS[name]


def resolve_data_dir(data_config: Any = None) -> str:
  """``data_config.data_dir``, else ``$SEG_JAX_DATA_DIR``, else ``~/tensorflow_datasets``."""
  data_dir = data_config.data_dir if data_config is not None else None
  if not data_dir:
    data_dir = os.environ.get("SEG_JAX_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.expanduser(os.fspath(data_dir))


def _shapes_config(builder_config: Any) -> shapes.ShapesConfig | str:
  """A registered config name, or a custom ``ShapesConfig`` from a dict (needs ``name``)."""
  if builder_config is None or isinstance(builder_config, str):
    return builder_config or shapes.Shapes.DEFAULT_CONFIG_NAME
  fields = dict(builder_config)
  if "name" not in fields:
    raise ValueError("a custom shapes builder_config needs a 'name' (its directory name)")
  return shapes.ShapesConfig(**fields)


def make_builder(data_config: Any) -> tfds.core.DatasetBuilder:
  """The TFDS builder for ``data_config.name`` (not prepared yet, maybe)."""
  name = data_config.name
  dataset_spec(name)
  data_dir = resolve_data_dir(data_config)
  builder_config = data_config.builder_config
  if name == "shapes":
    return shapes.Shapes(config=_shapes_config(builder_config), data_dir=data_dir)
  if name == "voc_segmentation":
    return voc.VocSegmentation(config=builder_config or "default", data_dir=data_dir)
  if name == "coco_instances":
    return coco.CocoInstances(data_dir=data_dir)
  return tfds.builder(name, config=builder_config or None, data_dir=data_dir)


@contextlib.contextmanager
def _file_lock(path: str):
  """Serialises preparation between processes sharing a data_dir (xdist, multi-host)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _missing_message(name: str, data_dir: str, builder_config=None) -> str:
  if name == "voc_segmentation" and builder_config == "fcn":
    return (f"FCN's VOC splits not found in {data_dir}: download {voc.VOC2011_ARCHIVE} from "
            f"{voc.VOC2011_URL} and {voc.SBD_ARCHIVE} from {voc.SBD_URL} (or {voc.VOC_ARCHIVE} "
            f"plus the reference {voc.SEG11VALID_LIST}) into a folder and pass "
            "--config.data.manual_dir=<folder>")
  if name == "voc_segmentation":
    return (f"VOC 2012 not found in {data_dir}: download {voc.VOC_ARCHIVE} from {voc.VOC_URL}"
            f" (train_aug also {voc.SBD_ARCHIVE} from {voc.SBD_URL}) into a folder and pass "
            "--config.data.manual_dir=<folder>")
  if name == "coco_instances":
    urls = ", ".join(coco.COCO_URLS.values())
    return (f"COCO 2017 not found in {data_dir}: download {urls}, extract them into a folder "
            "(train2017/, val2017/, annotations/) and pass --config.data.manual_dir=<folder>")
  if name == "oxford_iiit_pet":
    return (f"oxford_iiit_pet not found in {data_dir}: run `tfds build oxford_iiit_pet "
            f"--data_dir=<dir>` where the network is reachable and copy <dir> to {data_dir} "
            "(or pass --config.data.data_dir=<dir>)")
  return f"{name} not found in {data_dir}"


_DOWNLOAD_URLS = {"voc_segmentation": voc.VOC_URL, "coco_instances": coco.COCO_URL,
                  "oxford_iiit_pet": "https://thor.robots.ox.ac.uk/~vgg/data/pets"}


def _reachable(url: str, timeout: float = 5.0) -> bool:
  """Quick TCP probe: TFDS' downloader retries with back-off for minutes when offline."""
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
    return True  # behind a proxy a direct probe says nothing; let TFDS try
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    with socket.create_connection((parsed.hostname, port), timeout=timeout):
      return True
  except OSError:
    return False


def get_builder(data_config: Any) -> tfds.core.DatasetBuilder:
  """The builder for ``data_config``, prepared (``shapes`` is generated if needed)."""
  builder = make_builder(data_config)
  if builder.is_prepared():
    return builder
  data_dir = resolve_data_dir(data_config)
  name = data_config.name
  manual_dir = data_config.manual_dir
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  if name != "shapes" and not manual_dir and (
      not data_config.download or not _reachable(_DOWNLOAD_URLS[name])):
    raise FileNotFoundError(_missing_message(name, data_dir, data_config.builder_config))
  with _file_lock(os.path.join(data_dir, f".{name}.prepare.lock")):
    builder = make_builder(data_config)  # another process may have prepared it meanwhile
    if builder.is_prepared():
      return builder
    logging.info("preparing %s in %s", builder.info.full_name, data_dir)
    try:
      builder.download_and_prepare(download_config=download_config)
    except Exception as e:  # pylint: disable=broad-except
      if name == "shapes":
        raise
      cause = str(e).splitlines()[0] if str(e) else ""
      if isinstance(e, ValueError):  # files are there but their contents are wrong
        raise ValueError(f"preparing {name} in {data_dir}: {cause}") from e
      missing = _missing_message(name, data_dir, data_config.builder_config)
      raise FileNotFoundError(f"{missing} ({type(e).__name__}: {cause[:200]})") from e
  return builder
