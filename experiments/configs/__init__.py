"""Experiment configs: one ``get_config(arg=None)`` per file, selected by ``--config=NAME[:ARG]``.

Also the small command-line helpers the entry points share: resolving a config NAME to its
file (``--config=unet_shapes`` == ``--config=experiments/configs/unet_shapes.py``), turning
flag errors into one-line messages, and :func:`apply_overrides` (``a.b=value`` strings parsed
as ``--config.a.b=value`` is, for sweeps and tests).
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from typing import Any, Mapping, Sequence, Union

from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import UnsupportedOperationError

from experiments.configs import _options

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def config_names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def config_path(value: str) -> str:
  """``NAME[:ARG]`` or ``path.py[:ARG]`` -> ``path.py[:ARG]``; unknown NAME -> ValueError."""
  name, sep, arg = value.partition(":")
  if name.endswith(".py") or os.sep in name:
    return value
  if name not in config_names():
    raise ValueError(f"unknown config {name!r}; known configs: {', '.join(config_names())}")
  return os.path.join(CONFIG_DIR, name + ".py") + sep + arg


def load_config(value: str):
  """``NAME[:ARG]`` -> the config ``NAME.get_config(ARG)`` builds (as ``--config`` would)."""
  name, _, arg = value.partition(":")
  config_path(name)  # unknown NAME -> the one-line error naming the known configs
  return importlib.import_module(f"experiments.configs.{name}").get_config(arg or None)


def config_name(value: str) -> str:
  """The bare config name (for default workdirs): 'a/b/unet_shapes.py:runlocal' -> 'unet_shapes'."""
  name, _, arg = value.partition(":")
  name = os.path.splitext(os.path.basename(name))[0]
  return f"{name}_{arg.replace(',', '_')}" if arg else name


def resolve_config_argv(argv: list[str], flag: str = "config") -> list[str]:
  """Rewrites ``--config=NAME`` / ``--config NAME`` in ``argv`` to the config file path."""
  argv = list(argv)
  for i, item in enumerate(argv):
    if item.startswith(f"--{flag}="):
      argv[i] = f"--{flag}=" + config_path(item.split("=", 1)[1])
    elif item == f"--{flag}" and i + 1 < len(argv):
      argv[i + 1] = config_path(argv[i + 1])
  return argv


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """An ``absl.app.run`` flags parser: NAME resolution and one-line errors (exit code 2)."""
  try:
    return flags.FLAGS(resolve_config_argv(argv))
  except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
    sys.stderr.write(f"error: {_describe(e, argv)}\n")
    sys.exit(2)


def _describe(error: Exception, argv: list[str]) -> str:
  """One line; names the ``--config.a.b`` override when a field does not exist."""
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  message = lines[0] if lines else type(error).__name__
  if "Traceback" in str(error):  # config file raised: keep the flag and the final exception
    message = f"{message} {lines[-1]}"
  if isinstance(error, (KeyError, AttributeError)) or "not found" in message.lower():
    missing = message.strip("\"'")
    for item in argv:
      key = item[2:].split("=", 1)[0]
      if item.startswith("--config.") and missing in key.split(".")[1:]:
        return f"unknown config field {key[len('config.'):]!r} (in {item})"
  return message


def start_cli(argv: list[str]) -> None:
  """Shared start of every entry point: no stray arguments, and WARNING-level logs unless
  ``--verbosity`` is given (orbax and TFDS are chatty at INFO)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def default_workdir(prefix: str = "") -> str:
  """``/tmp/seg_jax/<prefix><config name>`` for the parsed ``--config`` flag."""
  return _options.run_dir(prefix + config_name(flags.FLAGS["config"].config_filename))


def _check_field(config, key: str) -> None:
  node = config
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise ValueError(f"unknown config field {key!r}")
    node = node[part]


def _parse_override(config, key: str, raw: str):
  """``config`` with ``key`` set from the string ``raw`` by ml_collections' own flag parsing
  (the parsers behind ``--config.key=raw``), or a Python literal for field types those
  parsers do not cover (None and list fields; a non-literal stays a string)."""
  argv = ["apply_overrides", f"--config.{key}={raw}"]
  flag_values = flags.FlagValues()
  try:  # the override is parsed while the flag is defined, and again by the call
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values,
                                    lock_config=False, sys_argv=argv)
    flag_values(argv)
  except UnsupportedOperationError:
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    _set(config, key, value)
    return config
  except flags.Error as e:
    raise ValueError(f"config field {key!r}: cannot parse {raw!r} ({e})") from e
  return flag_values["config"].value


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  try:
    node[leaf] = value
  except TypeError as e:
    raise ValueError(f"config field {key!r}: cannot set {value!r} ({e})") from e


def apply_overrides(config, overrides: Union[Sequence[str], Mapping[str, Any]]):
  """A copy of ``config`` with dotted fields replaced, in order.

  ``overrides`` is either ``['a.b=value', ...]``, each string parsed exactly as the command
  line parses ``--config.a.b=value`` (see :func:`_parse_override`), or a mapping
  ``{'a.b': value}`` of Python values set as given. An unknown field, a string without
  ``=`` or a value of the wrong type is a ValueError naming the field.
  """
  config = config.copy_and_resolve_references()
  config.unlock()
  if isinstance(overrides, Mapping):
    for key, value in overrides.items():
      _check_field(config, key)
      _set(config, key, value)
    return config
  for item in overrides:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"config override must look like KEY=VALUE, got {item!r}")
    _check_field(config, key)
    config = _parse_override(config, key, raw)
  return config
