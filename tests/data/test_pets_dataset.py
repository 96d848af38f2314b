"""Oxford-IIIT Pet trimap -> background / pet / ignore, under ``tfds.testing.mock_data``."""

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data import builders, pets, pipeline


def _reference(trimap):
  """Loop reference of the documented mapping: 1 pet, 2 background, anything else ignore."""
  out = np.empty(trimap.shape, np.uint8)
  for index, value in np.ndenumerate(trimap):
    out[index] = {1: 1, 2: 0}.get(int(value), 255)
  return out


def test_trimap_mapping_on_mock_examples(tmp_path):
  with tfds.testing.mock_data(num_examples=3, max_value=4,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    raw = tfds.load("oxford_iiit_pet", split="train", data_dir=str(tmp_path))
    for example in tfds.as_numpy(raw.take(3)):
      trimap = example["segmentation_mask"]
      assert set(np.unique(trimap)) <= {0, 1, 2, 3}
      got = pets.trimap_to_labels(trimap).numpy()
      np.testing.assert_array_equal(got, _reference(trimap))
      mapped = pets.pets_to_semantic(example)
      assert mapped["segmentation"].shape[:2] == example["image"].shape[:2]


def test_pets_pipeline_on_mock_data(tmp_path, monkeypatch):
  monkeypatch.setattr(builders, "_reachable", lambda url: True)  # mock_data stands in for it
  cfg = pipeline.default_data_config("oxford_iiit_pet", data_dir=str(tmp_path), image_size=32)
  assert cfg.resize == "longer_side" and cfg.num_classes == 2
  with tfds.testing.mock_data(num_examples=5, max_value=4,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    train = next(pipeline.get_dataset(cfg, split="train", train=True, global_batch_size=2,
                                      process_index=0, process_count=1))
    evals = list(pipeline.get_dataset(cfg, split="test", train=False, global_batch_size=2,
                                      process_index=0, process_count=1))
  assert train["image"].shape == (2, 32, 32, 3) and train["label"].shape == (2, 32, 32)
  assert set(np.unique(train["label"])) <= {0, 1, 255}
  assert len(evals) == 3 and evals[-1]["valid"].tolist() == [True, False]
  for batch in evals:
    assert set(np.unique(batch["label"])) <= {0, 1, 255}
    # longer_side resize: a real image reaches the right or the bottom edge
    for image, valid in zip(batch["image"], batch["valid"]):
      touches = (image[0, -1] != 0).any() or (image[-1, 0] != 0).any()
      assert touches == bool(valid)
  info = pipeline.dataset_info(cfg)
  assert info["class_names"] == ["background", "pet"]
