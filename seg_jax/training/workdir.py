"""The run directory of a training run: checked, locked, tidied at start.

* :class:`WorkdirLock` holds an exclusive ``fcntl`` lock on ``workdir/.lock`` for the
  lifetime of a run, so a second trainer on the same directory stops at once with a one-line
  error naming the holder's pid and host (the kernel drops the lock when the holder dies,
  also on ``kill -9``; the file itself stays and is reused).
* :func:`clean_temporary_checkpoints` removes ``*.orbax-checkpoint-tmp*`` directories that
  an interrupted save left behind (only safe while holding the lock).
* :func:`truncate_metrics` drops ``metrics.jsonl`` records the resumed run will write again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time

LOCK_FILE = ".lock"
TMP_MARKER = ".orbax-checkpoint-tmp"


class WorkdirError(ValueError):
  """The workdir cannot be used (a file, not writable, locked); one-line message."""


class WorkdirLockedError(WorkdirError):
  """Another run holds the workdir lock."""


def check_usable(workdir: str) -> None:
  """Refuses, creating nothing, a ``workdir`` that :func:`prepare` could not create or use:
  a file, or one under a file or a directory this process cannot write."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory")
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if existing != workdir:
    if not os.path.isdir(existing):
      raise WorkdirError(f"cannot create workdir {workdir} ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
      raise WorkdirError(f"cannot create workdir {workdir} ({existing} is not writable)")
  elif not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir} is not writable")


def prepare(workdir: str) -> str:
  """Creates ``workdir`` if needed and checks it is a writable directory; returns its abspath."""
  check_usable(workdir)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f"cannot create workdir {workdir} ({error.strerror})") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir} is not writable")
  return workdir


class WorkdirLock:
  """Exclusive lock on ``workdir/.lock``; use as a context manager or acquire/release."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._file = None

  def acquire(self) -> "WorkdirLock":
    handle = open(self.path, "a+")  # pylint: disable=consider-using-with  # held until release
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.seek(0)
      holder = _describe_holder(handle.read())
      handle.close()
      raise WorkdirLockedError(
          f"workdir {os.path.dirname(self.path)} is in use by another training run ({holder}); "
          "wait for it to finish or pass another --workdir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is not None:
      self._file.truncate(0)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _describe_holder(text: str) -> str:
  try:
    info = json.loads(text)
    return f"pid {info['pid']} on host {info['host']}, started {info.get('started', '?')}"
  except (ValueError, KeyError, TypeError):
    return "pid unknown: the lock file is being written"


def clean_temporary_checkpoints(directory: str) -> list[str]:
  """Removes unfinished orbax saves (``<step>.orbax-checkpoint-tmp-*``); returns their names."""
  if not os.path.isdir(directory):
    return []
  removed = sorted(name for name in os.listdir(directory) if TMP_MARKER in name)
  for name in removed:
    path = os.path.join(directory, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)
  return removed


def truncate_metrics(workdir: str, step: int, *, rewrite_eval_at_step: bool = False) -> int:
  """Keeps only ``metrics.jsonl`` records with ``step <= step`` (the resumed step).

  With ``rewrite_eval_at_step`` the eval records of ``step`` itself go too (a finished run
  re-evaluates its last checkpoint). A line cut short by a kill is dropped. Rewritten through
  a temporary file and a rename. Returns the number of records removed.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  kept, removed = [], 0
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        record_step = int(record["step"])
      except (ValueError, KeyError, TypeError):
        removed += bool(line.strip())
        continue
      if record_step > step or (rewrite_eval_at_step and record_step == step and
                                record.get("kind") == "eval"):
        removed += 1
        continue
      kept.append(line if line.endswith("\n") else line + "\n")
  if removed:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return removed

