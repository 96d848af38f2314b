"""How every entry point fails: one line ``error: ...`` and exit code 2 for expected failures.

Expected failures are bad input the user can fix: missing, unreadable or corrupt files
(``OSError``, ``ValueError`` and the library errors derived from it, refused pickles,
damaged ``.safetensors``), bad sizes, workdirs and steps, a diverged run. Anything else is a
bug and keeps its traceback. ``--verbose`` (or ``SEG_JAX_TRACEBACK=1``) shows the traceback
of expected failures too.

Exit codes: 0 done, 2 error (bad input, see above), 75 preempted (SIGTERM: a checkpoint was
saved; run the same command again to resume; ``EX_TEMPFAIL`` of sysexits.h).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from absl import flags

EXIT_ERROR = 2
EXIT_PREEMPTED = 75  # == seg_jax.training.loop.PREEMPTED_EXIT_CODE
TRACEBACK_ENV = "SEG_JAX_TRACEBACK"

# Errors from libraries whose classes we do not import here (TensorFlow, safetensors, TFDS):
# matched by class name anywhere in the exception's MRO.
_EXPECTED_NAMES = {"SafetensorError", "OpError", "DatasetNotFoundError", "UnidentifiedImageError"}
_EXPECTED_TYPES = (ValueError, OSError, EOFError, pickle.UnpicklingError, FloatingPointError,
                   MemoryError)

VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of errors (also with "
                            f"{TRACEBACK_ENV}=1).")


class CliError(Exception):
  """An expected failure whose message is ready to print (without the ``error:`` prefix)."""


class Preempted(Exception):
  """A run stopped on SIGTERM after saving a checkpoint at ``step``."""

  def __init__(self, step: int):
    super().__init__(f"preempted at step {step}: checkpoint saved; run the same command again "
                     "to resume")
    self.step = step


def fail(message: str) -> NoReturn:
  raise CliError(message)


def is_expected(error: BaseException) -> bool:
  if isinstance(error, (CliError,) + _EXPECTED_TYPES):
    return True
  return any(cls.__name__ in _EXPECTED_NAMES for cls in type(error).__mro__)


def one_line(error: BaseException) -> str:
  """The first non-empty line of the message (the type name if there is none)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  text = lines[0]
  if not isinstance(error, (CliError, ValueError, OSError, MemoryError, FloatingPointError)):
    # e.g. "SafetensorError: ...": the message alone would not say what failed
    text = f"{type(error).__name__}: {text}"
  return text


def traceback_wanted(flag_values: Optional[flags.FlagValues] = None) -> bool:
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    return bool(flag_values["verbose"].value)
  except KeyError:
    return False


def report(error: BaseException, flag_values: Optional[flags.FlagValues] = None) -> int:
  """Prints ``error: ...`` (and the traceback if wanted); returns the exit code."""
  if isinstance(error, Preempted):
    sys.stderr.write(f"{error}\n")
    sys.stderr.flush()
    return EXIT_PREEMPTED
  if traceback_wanted(flag_values):
    traceback.print_exception(error, file=sys.stderr)
  sys.stderr.write(f"error: {one_line(error)}\n")
  sys.stderr.flush()
  return EXIT_ERROR


def guarded(main: Callable[[Sequence[str]], None],
            flag_values: Optional[flags.FlagValues] = None) -> Callable[[Sequence[str]], None]:
  """``main`` whose expected failures exit with one line (see the module docstring)."""
  def run(argv):
    try:
      return main(argv)
    except (CliError, Preempted) as error:
      sys.exit(report(error, flag_values))
    except Exception as error:  # pylint: disable=broad-except  # sorted by is_expected
      if not is_expected(error):
        raise
      sys.exit(report(error, flag_values))
  return run
