"""The real-dataset configs (VOC FCN recipe, U-Net on pets) run end to end on mock data.

Batches come from the real pipeline under ``tfds.testing.mock_data``; they are taken before
training because mock_data also redirects file I/O, which orbax checkpoints must not see.
The model is swapped for a tiny one (the configs' own models are tested in tests/models).
"""

import itertools

import jax
import pytest
import tensorflow_datasets as tfds

from experiments.configs import fcn8s_voc, unet_pets
from seg_jax import data as data_lib
from seg_jax.data import builders
from seg_jax.training import loop


@pytest.mark.parametrize("config_module", [fcn8s_voc, unet_pets], ids=["fcn8s_voc", "unet_pets"])
def test_config_trains_on_mock_data(config_module, tmp_path, monkeypatch):
  config = config_module.get_config("runlocal")
  assert config.data.name in ("voc_segmentation", "oxford_iiit_pet")
  config.model = {"name": "full_res_fcn", "features": 4, "num_layers": 1}
  config.data.image_size = 32
  # mock_data draws image and label sizes independently: resize both to one size (the VOC
  # reference recipe keeps original sizes, which needs matching image/label files).
  config.data.resize = "none"
  config.data.augmentation = {"scale_range": (1.0, 1.0), "flip": True, "crop": True}
  config.data.data_dir = str(tmp_path / "no_data")
  config.num_train_steps = 2
  monkeypatch.setattr(builders, "_reachable", lambda url: True)  # mock_data stands in
  splits = [(config.data.train_split, True), (config.data.eval_split, False)]
  with tfds.testing.mock_data(num_examples=6, max_value=4,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    info = data_lib.dataset_info(config.data)
    batches = {key: list(itertools.islice(data_lib.get_dataset(
        config.data, split=key[0], train=key[1], global_batch_size=config.batch_size), 3))
               for key in splits}
  info["num_examples"] = {}  # the mock split sizes differ from the real ones
  monkeypatch.setattr(data_lib, "dataset_info", lambda cfg: info)
  monkeypatch.setattr(data_lib, "get_dataset", lambda cfg, *, split, train, **kwargs: iter(
      batches[(split, train)] * (10 if train else 1)))
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    scores = loop.train_and_evaluate(config, str(tmp_path / "run"))
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
  assert len(scores["per_class_iou"]) == config.data.num_classes
  assert 0.0 <= scores["pixel_accuracy"] <= 1.0
