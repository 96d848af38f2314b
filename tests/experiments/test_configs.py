"""Every experiment config defines every field of ``base_config`` for its dataset and task
(the code reads them directly), in every ``arg`` variant's default and ``runlocal`` form."""

import importlib

import pytest

from experiments import configs
from seg_jax.training.config import base_config


def _fields(config, prefix=""):
  """Dotted names of every field; sections count as fields too."""
  names = set()
  for key, value in config.items():
    names.add(prefix + key)
    if hasattr(value, "items") and key != "model":  # model fields are the model's own
      names |= _fields(value, f"{prefix}{key}.")
  return names


@pytest.mark.parametrize("name", configs.config_names())
def test_config_has_every_base_field(name):
  for arg in (None, "runlocal"):
    config = importlib.import_module(f"experiments.configs.{name}").get_config(arg)
    missing = _fields(base_config(config.data.name, config.task)) - _fields(config)
    assert not missing, f"{name}:{arg or ''} lacks {sorted(missing)}"

