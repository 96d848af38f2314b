"""``seg_jax.data.config``: the data section without TensorFlow, consistent with the builders."""

import os
import subprocess
import sys

import pytest

from seg_jax.data import builders, pipeline
from seg_jax.data import config as data_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_base_config_does_not_import_tensorflow():
  code = ("import sys\n"
          "from seg_jax.training.config import base_config\n"
          "base_config('coco_instances', 'detection')\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets')))\n")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(data_config.DATASETS))
def test_config_facts_agree_with_the_builders(name):
  config, spec = data_config.default_data_config(name), builders.dataset_spec(name)
  assert config.num_classes == len(spec.class_names)
  assert (config.train_split, config.eval_split) == (spec.train_split, spec.eval_split)
  assert spec.has_instances == bool(spec.instance_class_names)
  assert pipeline.default_data_config is data_config.default_data_config  # the old name


def test_unknown_dataset_is_named():
  with pytest.raises(ValueError, match="unknown dataset 'nope'; known datasets: coco_instances"):
    data_config.default_data_config("nope")
