"""Fault injection: damaged checkpoints, a second trainer, SIGTERM, SIGKILL, divergence.

One reference run (6 steps, checkpoints 2, 4, 6) is damaged in copies; restoring must fall
back to the newest readable checkpoint with a one-line warning and give bitwise the state an
uninterrupted run has. The CLI runs in two subprocesses: SIGTERM (exit code 75, then resume)
and SIGKILL (then resume in-process, bitwise equal to the reference).
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.configs import apply_overrides
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop
from seg_jax.training import workdir as workdir_lib

pytestmark = pytest.mark.usefixtures("fast_compile")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NUM_STEPS = 6

# Written to a file so the CLI subprocesses train exactly the in-process config.
CONFIG_SOURCE = f'''
from experiments.configs import shapes_base


def get_config(arg=None):
  config = shapes_base.base_config("shapes")
  config.model = {{"name": "full_res_fcn", "features": 4, "num_layers": 2}}
  shapes_base.apply_runlocal(config)
  config.num_train_steps = {NUM_STEPS}
  config.checkpoint_every = 2
  config.keep_checkpoints = 3
  config.eval_every = 0
  config.log_every = 1
  config.num_overlays = 0
  config.optimizer.learning_rate = 1e-2
  return config
'''


def tiny_config(**overrides):
  namespace = {}
  exec(CONFIG_SOURCE, namespace)  # pylint: disable=exec-used
  return apply_overrides(namespace["get_config"](), overrides)


def _state(workdir, step):
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
  try:
    return checkpointer.restore(step=step)
  finally:
    checkpointer.close()


def _assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _train_steps(workdir):
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["step"] for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  scores = loop.train_and_evaluate(tiny_config(), workdir)
  return workdir, scores


def _copy_run(reference, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir, ignore=shutil.ignore_patterns(".lock"))
  return workdir


def _damage(checkpoint_dir, how):
  item = os.path.join(checkpoint_dir, "default")
  if how == "truncate":  # every data file cut in half
    for path in glob.glob(os.path.join(item, "**", "d", "*"), recursive=True):
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  elif how == "delete_data":
    for path in glob.glob(os.path.join(item, "**", "d", "*"), recursive=True):
      os.remove(path)
  elif how == "delete_metadata":
    os.remove(os.path.join(item, "_METADATA"))
  elif how == "delete_default":
    shutil.rmtree(item)


@pytest.mark.parametrize("how", ["truncate", "delete_data", "delete_metadata", "delete_default"])
def test_restore_variables_falls_back_to_newest_readable(reference, tmp_path, capsys, how):
  directory = os.path.join(_copy_run(reference, tmp_path), "checkpoints")
  _damage(os.path.join(directory, "6"), how)
  step, variables = checkpoint_lib.restore_variables(directory)
  assert step == 4
  saved = _state(reference[0], 4)
  _assert_same_tree(variables["params"], jax.tree.map(np.asarray, saved["params"]))
  warning = capsys.readouterr().err.strip().splitlines()
  assert len(warning) == 1 and warning[0].startswith("warning: checkpoint 6 is unreadable (")
  assert warning[0].endswith("); falling back to 4")
  with pytest.raises(checkpoint_lib.UnreadableCheckpointError, match="^checkpoint 6 in .* is "
                     r"unreadable \(.*\)$"):
    checkpoint_lib.restore_variables(directory, step=6)


def test_nothing_readable_is_one_line(reference, tmp_path):
  directory = os.path.join(_copy_run(reference, tmp_path), "checkpoints")
  for step in ("2", "4", "6"):
    _damage(os.path.join(directory, step), "delete_metadata")
  with pytest.raises(checkpoint_lib.UnreadableCheckpointError) as error:
    checkpoint_lib.restore_variables(directory)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"no readable checkpoint in {directory} (6: ")
  with pytest.raises(checkpoint_lib.UnreadableCheckpointError, match="no readable checkpoint"):
    loop.train_and_evaluate(tiny_config(), os.path.dirname(directory))


def test_step_must_exist(reference):
  directory = os.path.join(reference[0], "checkpoints")
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"^step 999 is not a saved checkpoint in .*; saved steps: 2, 4, 6$"):
    loop.evaluate(tiny_config(), reference[0], step=999)


def test_mismatch_names_the_layer(reference):
  directory = os.path.join(reference[0], "checkpoints")
  saved = checkpoint_lib.restore_variables(directory, step=2)[1]
  template = jax.tree.map(np.zeros_like, saved)
  name = sorted(k for k, v in template["params"].items() if "kernel" in v)[0]
  kernel = template["params"][name]["kernel"]
  template["params"][name]["kernel"] = np.zeros(kernel.shape[:-1] + (kernel.shape[-1] + 1,))
  expected = (f"checkpoint 2 does not fit the model: params/{name}/kernel has shape "
              f"{kernel.shape} in the checkpoint, the model expects "
              f"{kernel.shape[:-1] + (kernel.shape[-1] + 1,)}")
  with pytest.raises(checkpoint_lib.CheckpointMismatchError) as error:
    checkpoint_lib.restore_variables(directory, step=2, template=template)
  assert str(error.value) == expected
  # End to end: a wider model than the run was trained with.
  with pytest.raises(checkpoint_lib.CheckpointMismatchError, match="does not fit the model: "
                     r"params/.* has shape \(.*\) in the checkpoint, the model expects"):
    loop.evaluate(tiny_config(**{"model.features": 8}), reference[0])


def test_resume_skips_a_truncated_checkpoint_bitwise(reference, tmp_path, capsys):
  workdir = _copy_run(reference, tmp_path)
  _damage(os.path.join(workdir, "checkpoints", "6"), "truncate")
  leftover = os.path.join(workdir, "checkpoints", "8.orbax-checkpoint-tmp-1234")
  os.makedirs(leftover)
  capsys.readouterr()
  scores = loop.train_and_evaluate(tiny_config(), workdir)
  err = capsys.readouterr().err
  assert "warning: checkpoint 6 is unreadable (" in err and "); falling back to 4" in err
  assert not os.path.exists(leftover)
  assert os.listdir(os.path.join(workdir, "unreadable_checkpoints")) == ["6"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
  _assert_same_tree(_state(reference[0], 6), _state(workdir, 6))  # incl. optimizer state
  assert scores["mean_iou"] == reference[1]["mean_iou"]
  assert _train_steps(workdir) == list(range(1, NUM_STEPS + 1))  # no duplicate steps
  evals = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
           if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [NUM_STEPS]


def test_finished_run_rerun_keeps_one_eval_record(reference, tmp_path):
  workdir = _copy_run(reference, tmp_path)
  loop.train_and_evaluate(tiny_config(), workdir)  # nothing left to train: evaluates again
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(r["step"], r["kind"]) for r in records].count((NUM_STEPS, "eval")) == 1
  assert _train_steps(workdir) == list(range(1, NUM_STEPS + 1))


def test_lock_refuses_a_second_run(tmp_path):
  with workdir_lib.WorkdirLock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirLockedError) as error:
      loop.train_and_evaluate(tiny_config(), str(tmp_path))
  message = str(error.value)
  assert "\n" not in message
  assert f"is in use by another training run (pid {os.getpid()} on host " \
         f"{socket.gethostname()}" in message
  workdir_lib.WorkdirLock(str(tmp_path)).acquire().release()  # released on exit


def test_bad_workdirs(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match=f"workdir {a_file} is a file"):
    loop.train_and_evaluate(tiny_config(), str(a_file))
  under = a_file / "run" / "sub"
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"cannot create workdir {under} \\({a_file} is a file\\)"):
    loop.train_and_evaluate(tiny_config(), str(under))
  if os.geteuid() != 0:  # root may write anywhere
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    with pytest.raises(workdir_lib.WorkdirError, match="is not writable"):
      loop.train_and_evaluate(tiny_config(), str(read_only))


def test_truncate_metrics_drops_later_and_torn_records(tmp_path):
  lines = [json.dumps({"step": s, "kind": k}) for s, k in
           [(1, "train"), (2, "train"), (2, "eval"), (3, "train"), (4, "train")]]
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "ki')
  assert workdir_lib.truncate_metrics(str(tmp_path), 2) == 3
  kept = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["kind"]) for r in kept] == [(1, "train"), (2, "train"), (2, "eval")]
  assert workdir_lib.truncate_metrics(str(tmp_path), 2, rewrite_eval_at_step=True) == 1


def test_nan_parameters_are_never_checkpointed(tmp_path, monkeypatch):
  """The update of step 4 makes the parameters NaN while its loss (computed before the
  update) is finite: the save at step 4 must be refused, keeping checkpoint 2."""
  real_train_step = loop.step_lib.train_step

  def poisoned(state, batch, *args, **kwargs):
    new_state, metrics = real_train_step(state, batch, *args, **kwargs)
    poison = jax.numpy.where(new_state.step == 4, jax.numpy.nan, 0.0)
    return new_state.replace(params=jax.tree.map(lambda p: p + poison, new_state.params)), metrics

  monkeypatch.setattr(loop.step_lib, "train_step", poisoned)
  config = tiny_config(**{"num_train_steps": 4, "log_every": 100})
  with pytest.raises(loop.NonFiniteLossError, match=r"^non-finite parameters after step 4; not "
                     r"checkpointed \(last healthy checkpoint: 2\)$"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  assert np.all([np.isfinite(x).all() for x in jax.tree.leaves(_state(str(tmp_path), 2))])


def _start_cli(workdir, config_file, *extra):
  # The JAX settings of the test process (conftest, fast_compile): bitwise equal runs.
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, NO_GCE_CHECK="true",
             TF_CPP_MIN_LOG_LEVEL="2", JAX_THREEFRY_PARTITIONABLE="false",
             JAX_DISABLE_MOST_OPTIMIZATIONS="true")
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--config={config_file}",
       f"--workdir={workdir}", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _wait_for(path, process, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    if process.poll() is not None or time.time() > deadline:
      process.kill()
      raise AssertionError(f"{path} did not appear: {process.communicate()[1][-2000:]}")
    time.sleep(0.05)


def test_sigterm_exits_75_and_sigkill_resumes_bitwise(tmp_path):
  """SIGTERM: checkpoint, exit code 75. SIGKILL of the resumed run after its next save, then
  a resume: final state, optimizer state and metrics equal an uninterrupted run bitwise."""
  steps, every = 100, 10  # long enough that the signals land mid-run
  overrides = {"num_train_steps": steps, "checkpoint_every": every}
  config_file = tmp_path / "faults_config.py"
  config_file.write_text(CONFIG_SOURCE.replace(f"= {NUM_STEPS}\n", f"= {steps}\n").replace(
      "checkpoint_every = 2\n", f"checkpoint_every = {every}\n"))
  workdir = str(tmp_path / "run")
  process = _start_cli(workdir, config_file)
  _wait_for(os.path.join(workdir, "checkpoints", str(every)), process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=240)
  assert process.returncode == 75, stderr[-2000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("preempted at step ") and "Traceback" not in stderr
  stopped = int(last.split()[3].rstrip(":"))
  assert checkpoint_lib.saved_steps(os.path.join(workdir, "checkpoints"))[-1] == stopped

  process = _start_cli(workdir, config_file)
  next_save = stopped + every - stopped % every
  _wait_for(os.path.join(workdir, "checkpoints", str(next_save)), process)
  # While it runs the workdir is locked, naming the holder.
  with pytest.raises(workdir_lib.WorkdirLockedError, match=f"pid {process.pid} on host"):
    loop.train_and_evaluate(tiny_config(**overrides), workdir)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)

  loop.train_and_evaluate(tiny_config(**overrides), workdir)  # resumes
  reference = str(tmp_path / "reference")
  loop.train_and_evaluate(tiny_config(**overrides), reference)
  _assert_same_tree(_state(reference, steps), _state(workdir, steps))
  assert _train_steps(workdir) == list(range(1, steps + 1))
  losses = {}
  for name in (reference, workdir):
    records = [json.loads(line) for line in open(os.path.join(name, "metrics.jsonl"))]
    losses[name] = [r["loss"] for r in records if r["kind"] == "train"]
  assert losses[reference] == losses[workdir]


@pytest.mark.parametrize("batch_size,message", [(0, "batch_size must be positive, got 0"),
                                                (-4, "batch_size must be positive, got -4"),
                                                (2.5, "batch_size must be an integer, got 2.5")])
def test_bad_batch_size_names_the_value(tmp_path, batch_size, message):
  from seg_jax.training import sharding
  with pytest.raises(ValueError, match=f"^{message}$"):
    sharding.check_batch_size(batch_size, "jit")
  if isinstance(batch_size, int):  # the config's int field refuses a float itself
    with pytest.raises(ValueError, match=f"^{message}$"):
      loop.train_and_evaluate(tiny_config(batch_size=batch_size), str(tmp_path))
