"""Experiment configs: one ``get_config(arg=None)`` per file, selected by ``--config=NAME[:ARG]``.

Also the small command-line helpers the entry points share: resolving a config NAME to its
file (``--config=unet_shapes`` == ``--config=experiments/configs/unet_shapes.py``) and
turning flag errors into one-line messages.
"""

from __future__ import annotations

import os
import sys

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
  from absl import flags  # pylint: disable=g-import-not-at-top
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
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def default_workdir(prefix: str = "") -> str:
  """``/tmp/seg_jax/<prefix><config name>`` for the parsed ``--config`` flag."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return os.path.join("/tmp/seg_jax", prefix + config_name(flags.FLAGS["config"].config_filename))
