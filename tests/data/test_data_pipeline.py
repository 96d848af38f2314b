"""Input pipeline on a tiny ``shapes`` dataset: shapes, dtypes, padding, determinism."""

import numpy as np
import pytest

from seg_jax.data import builders, pipeline, shapes

SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, **overrides):
  return pipeline.default_data_config("shapes", data_dir=data_dir, builder_config="tiny",
                                      image_size=SIZE, **overrides)


def _get(cfg, **kwargs):
  kwargs.setdefault("process_index", 0)
  kwargs.setdefault("process_count", 1)
  return pipeline.get_dataset(cfg, **kwargs)


def _raw_validation():
  return [shapes.render_example(i, image_size=SIZE, split="validation", min_size=8,
                                max_size=16) for i in range(4)]


def test_dataset_info_prepares_shapes_automatically(data_dir):
  info = pipeline.dataset_info(_config(data_dir))
  assert info["num_classes"] == 5
  assert info["class_names"] == ["background", "circle", "square", "triangle", "star"]
  assert info["num_examples"] == {"train": 8, "validation": 4}


def test_train_batch_shapes_dtypes_and_values(data_dir):
  batch = next(_get(_config(data_dir), split="train", train=True, global_batch_size=4))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (4, SIZE, SIZE) and batch["label"].dtype == np.int32
  assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 4, 255}


def test_train_pads_small_images_with_ignore(data_dir):
  cfg = _config(data_dir)
  cfg.augmentation.scale_range = (0.5, 0.5)  # 32 px -> 16 px, padded back to 32
  cfg.augmentation.flip = False
  batch = next(_get(cfg, split="train", train=True, global_batch_size=4))
  label, image = batch["label"], batch["image"]
  assert np.all(label[:, 16:, :] == 255) and np.all(label[:, :, 16:] == 255)
  assert np.all(label[:, :16, :16] != 255)
  assert np.all(image[:, 16:, :] == 0) and np.all(image[:, :, 16:] == 0)  # 0 == the mean


def test_train_is_deterministic_under_a_seed(data_dir):
  cfg = _config(data_dir)
  first = _get(cfg, split="train", train=True, global_batch_size=4, seed=7)
  second = _get(cfg, split="train", train=True, global_batch_size=4, seed=7)
  other = _get(cfg, split="train", train=True, global_batch_size=4, seed=8)
  differs = False
  for _ in range(3):  # crosses an epoch boundary (8 examples)
    a, b, c = next(first), next(second), next(other)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
    differs |= not np.array_equal(a["image"], c["image"])
  assert differs


def test_eval_is_exact_and_pads_the_last_batch(data_dir):
  cfg = _config(data_dir)
  batches = list(_get(cfg, split="validation", train=False, global_batch_size=3))
  assert len(batches) == 2
  np.testing.assert_array_equal(batches[1]["valid"], [True, False, False])
  assert np.all(batches[1]["label"][1:] == 255) and np.all(batches[1]["image"][1:] == 0)
  images = np.concatenate([b["image"] for b in batches])[:4]
  labels = np.concatenate([b["label"] for b in batches])[:4]
  raw = _raw_validation()
  for image, label in zip(images, labels):
    pixels = pipeline.denormalize(image, cfg)
    ref = next(r for r in raw if np.abs(r["image"].astype(int) - pixels).max() <= 1)
    np.testing.assert_array_equal(label, ref["segmentation"])


def test_eval_shards_yield_equal_batch_counts(data_dir):
  cfg = _config(data_dir)
  per_process = [list(_get(cfg, split="train", train=False, global_batch_size=3,
                           process_index=p, process_count=3)) for p in range(3)]
  counts = [len(batches) for batches in per_process]
  valid = sum(int(b["valid"].sum()) for batches in per_process for b in batches)
  assert counts == [3, 3, 3] and valid == 8  # shards of 3/3/2 examples, batch of 1


def _check_instances(batch, max_instances):
  m = max_instances
  assert batch["boxes"].shape[1:] == (m, 4) and batch["boxes"].dtype == np.float32
  assert batch["classes"].shape[1:] == (m,) and batch["classes"].dtype == np.int32
  assert batch["instance_masks"].shape[1:] == (m, SIZE, SIZE)
  assert batch["instance_masks"].dtype == np.uint8 and batch["box_valid"].dtype == bool
  for b in range(batch["image"].shape[0]):
    label = batch["label"][b]
    union = np.zeros_like(label)
    for k in range(m):
      mask = batch["instance_masks"][b, k].astype(bool)
      if not batch["box_valid"][b, k]:
        assert not mask.any() and not batch["boxes"][b, k].any()
        continue
      assert mask.any()
      rows, cols = np.where(mask)
      np.testing.assert_array_equal(
          batch["boxes"][b, k], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
      assert np.all(label[mask] == batch["classes"][b, k] + 1)
      union[mask] = batch["classes"][b, k] + 1
    objects = (label != 0) & (label != 255)
    np.testing.assert_array_equal(union[objects], label[objects])


def test_instances_follow_the_augmentation(data_dir):
  cfg = _config(data_dir, task="instances", max_instances=6)
  cfg.augmentation.scale_range = (1.0, 2.0)  # crops cut and drop instances
  iterator = _get(cfg, split="train", train=True, global_batch_size=4, seed=3)
  for _ in range(3):
    _check_instances(next(iterator), 6)
  for batch in _get(cfg, split="validation", train=False, global_batch_size=4):
    _check_instances(batch, 6)
    assert "valid" in batch


def test_denormalize_inverts_normalisation(data_dir):
  cfg = _config(data_dir)
  pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
  mean, std = np.array(cfg.mean), np.array(cfg.std)
  normalised = ((pixels / 255.0 - mean) / std).astype(np.float32)
  np.testing.assert_array_equal(pipeline.denormalize(normalised, cfg), pixels)


def test_bad_configs_raise_clear_errors(data_dir, tmp_path):
  unknown = _config(data_dir)
  unknown.name = "nope"
  with pytest.raises(ValueError, match="unknown dataset"):
    pipeline.dataset_info(unknown)
  with pytest.raises(ValueError, match="num_classes"):
    _get(_config(data_dir, num_classes=3), split="train", train=True, global_batch_size=2)
  with pytest.raises(ValueError, match="multiple of process_count"):
    _get(_config(data_dir), split="train", train=True, global_batch_size=3, process_count=2)
  voc = pipeline.default_data_config("voc_segmentation", data_dir=str(tmp_path),
                                     download=False, task="instances")
  with pytest.raises(ValueError, match="instances"):
    _get(voc, split="train", train=True, global_batch_size=2)
  voc.task = "semantic"
  with pytest.raises(FileNotFoundError, match="VOC 2012 not found .*manual_dir"):
    _get(voc, split="train", train=True, global_batch_size=2)


def test_offline_download_fails_fast_with_instructions(tmp_path, monkeypatch):
  assert not builders._reachable("http://127.0.0.1:9/", timeout=2.0)  # closed local port
  monkeypatch.setattr(builders, "_reachable", lambda url: False)
  voc = pipeline.default_data_config("voc_segmentation", data_dir=str(tmp_path))
  assert voc.download
  with pytest.raises(FileNotFoundError, match="VOCtrainval_11-May-2012.tar"):
    builders.get_builder(voc)


def test_custom_shapes_config_from_a_dict(tmp_path):
  cfg = pipeline.default_data_config("shapes", data_dir=str(tmp_path), image_size=24)
  cfg.builder_config = None
  builder = builders.make_builder(cfg)
  assert builder.builder_config.name == "64"
  with pytest.raises(ValueError, match="name"):
    builders._shapes_config({"image_size": 24})  # pylint: disable=protected-access
  custom = builders._shapes_config({"name": "c", "image_size": 24, "num_train": 2,
                                    "num_validation": 2, "min_size": 6, "max_size": 12})
  assert custom.num_train == 2 and custom.image_size == 24
