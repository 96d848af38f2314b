"""experiments.benchmark: alternating worker processes, load lines and warnings, the loop's
own train_step, XLA memory and one-line errors. Nothing here asserts a timing."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmark_jax import benchmark_config
from seg_jax.benchmarks import compare, train_step
from seg_jax.training import loop
from seg_jax.training import step as step_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = dict(batch=2, size=16, width=0.0625, num_classes=3, steps=1, warmup=1)
TORCH_RESULT = {"step_s": 0.5, "infer_s": 0.25, "rss_mb": 321.0, "threads": 1}


def _script(path, body: str) -> list[str]:
  path.write_text(textwrap.dedent(body))
  return [sys.executable, str(path)]


def _fake_torch(tmp_path, log, exit_code=0):
  """A stand-in PyTorch worker: logs its argv, prints the JSON a real one would."""
  return _script(tmp_path / "fake_torch.py", f"""
      import json, sys
      with open({str(log)!r}, "a") as f:
        f.write(json.dumps(["torch"] + sys.argv[1:]) + "\\n")
      if {exit_code}:
        sys.stderr.write("ModuleNotFoundError: No module named 'torch'\\n")
        sys.exit({exit_code})
      print("some chatter first")
      print(json.dumps({TORCH_RESULT!r}))
      """)


def _logged_jax(tmp_path, log):
  """The real JAX worker (experiments.benchmark_jax), logging its argv first."""
  return _script(tmp_path / "jax_worker.py", f"""
      import json, runpy, sys
      with open({str(log)!r}, "a") as f:
        f.write(json.dumps(["jax"] + sys.argv[1:]) + "\\n")
      runpy.run_module("experiments.benchmark_jax", run_name="__main__", alter_sys=True)
      """)


def _loads(monkeypatch, values):
  values = iter(values)
  monkeypatch.setattr(compare.os, "getloadavg", lambda: (next(values), 0.0, 0.0))


def test_rounds_alternate_in_separate_processes(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")  # compile-bound tiny model
  monkeypatch.setenv("JAX_THREEFRY_PARTITIONABLE", "false")
  log = tmp_path / "calls.jsonl"
  # before/after of rounds jax1, torch1, jax2, torch2: busy before jax1 and torch2.
  _loads(monkeypatch, [0.7, 0.2, 0.1, 0.1, 0.3, 0.1, 0.5, 0.4])
  lines = []
  rows = compare.compare(["full_res_fcn"], rounds=2, jax_command=_logged_jax(tmp_path, log),
                         torch_command=_fake_torch(tmp_path, log), settings=TINY, cwd=ROOT,
                         out=lines.append)
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [c[0] for c in calls] == ["jax", "torch", "jax", "torch"]
  flags = ["--model=full_res_fcn"] + [f"--{k}={v}" for k, v in TINY.items()]
  assert all(c[1:] == flags for c in calls)

  starts = [i for i, line in enumerate(lines) if ": load before " in line]
  assert [lines[i] for i in starts] == [
      "round 1/2 jax   full_res_fcn: load before 0.70",
      "round 1/2 torch full_res_fcn: load before 0.10",
      "round 2/2 jax   full_res_fcn: load before 0.30",
      "round 2/2 torch full_res_fcn: load before 0.50"]
  warnings = [i for i, line in enumerate(lines) if line.startswith("WARNING: machine not quiet")]
  assert warnings == [starts[0] - 1, starts[3] - 1]
  assert "load 0.70 >= 0.5 before round 1/2 jax" in lines[warnings[0]]
  results = [line for line in lines if "median step" in line]
  assert len(results) == 4
  assert [line.rsplit("load after ", 1)[1] for line in results] == ["0.20", "0.10", "0.10",
                                                                     "0.40"]
  assert results[1].startswith("round 1/2 torch full_res_fcn: median step 0.500 s, inference "
                               "0.250 s, peak RSS 321 MB; load after")
  assert "XLA memory" in results[0] and "MB before the model)" in results[0]
  assert "XLA memory" not in results[1]

  (row,) = rows
  assert row["rounds"] == 2 and row["torch_error"] is None
  assert row["torch_step_s"] == 0.5 and row["torch_rss_mb"] == 321.0
  assert row["step_ratio"] == pytest.approx(0.5 / row["jax_step_s"])
  assert row["infer_ratio"] == pytest.approx(0.25 / row["jax_infer_s"])
  assert row["xla_memory_mb"] > 0 and row["jax_rss_mb"] > 0
  assert (row["load_before"], row["load_after"]) == ("0.10-0.70", "0.10-0.40")
  table = compare.table(rows).splitlines()
  assert table[0].startswith("| model | jax step s | torch step s | torch/jax |")
  assert table[2].startswith(f"| full_res_fcn | {row['jax_step_s']:.3f} | 0.500 | "
                             f"{row['step_ratio']:.2f} |")


def test_failing_torch_worker_stops_its_rounds_only(tmp_path, monkeypatch):
  log = tmp_path / "calls.jsonl"
  fake_jax = _script(tmp_path / "fake_jax.py", """
      import json
      print(json.dumps({"step_s": 2.0, "infer_s": 1.0, "xla_memory_mb": 10.0, "rss_mb": 99.0}))
      """)
  _loads(monkeypatch, [0.0] * 16)
  lines = []
  rows = compare.compare(["unet"], rounds=3, jax_command=fake_jax,
                         torch_command=_fake_torch(tmp_path, log, exit_code=1), settings={},
                         out=lines.append)
  assert len(log.read_text().splitlines()) == 1  # not retried in later rounds
  assert sum("jax   unet: median step 2.000 s" in line for line in lines) == 3
  assert rows[0]["torch_error"].endswith("No module named 'torch'")
  assert rows[0]["step_ratio"] is None
  assert "unet: torch worker failed:" in compare.table(rows)


def test_wait_for_quiet_polls_until_the_load_drops(monkeypatch):
  _loads(monkeypatch, [0.9, 0.7, 0.4, 0.1])
  slept = []
  assert compare.wait_for_quiet(0.5, 60, poll_seconds=5, sleep=slept.append) == 0.4
  assert slept == [5, 5]
  _loads(monkeypatch, [0.9, 0.8, 0.7])
  slept.clear()
  assert compare.wait_for_quiet(0.5, 10, poll_seconds=5, sleep=slept.append) == 0.7
  assert slept == [5, 5]  # gave up after max_seconds


def test_worker_without_json_is_an_error(tmp_path):
  silent = _script(tmp_path / "silent.py", "print('no json here')\n")
  with pytest.raises(compare.WorkerError, match="last output line is not JSON: 'no json here'"):
    compare.run_worker(silent, [])
  with pytest.raises(ValueError, match="rounds must be >= 2"):
    compare.compare(["unet"], rounds=1, jax_command=silent, torch_command=None, settings={})


def test_jax_side_times_the_loops_train_step(monkeypatch, fast_compile):
  del fast_compile
  executed = []
  original = step_lib.train_step

  def counting_train_step(state, batch, **kwargs):
    jax.debug.callback(lambda: executed.append(1))  # once per executed step
    return original(state, batch, **kwargs)

  monkeypatch.setattr(step_lib, "train_step", counting_train_step)
  config = benchmark_config("full_res_fcn", batch=2, size=16, width=0.0625)
  result = train_step.time_train_step(config, 3, steps=3, warmup=2)
  assert len(executed) == 5  # warm-up + timed steps, all through the loop's train_step
  memory = result["xla_memory_bytes"]
  assert memory["total"] == memory["temp"] + memory["argument"] + memory["output"]
  assert result["xla_memory_mb"] == memory["total"] / 2**20
  # Arguments are the train state (parameters and their momentum, at least) and the batch.
  model = loop.build_model(config, 3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                             train=False))
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes["params"]))
  batch_bytes = 2 * 16 * 16 * 3 * 4 + 2 * 16 * 16 * 4
  assert memory["argument"] >= batch_bytes + 2 * param_bytes
  assert 0 < result["rss_start_mb"] <= result["rss_mb"]
  assert result["steps"] == 3 and result["warmup"] == 2


def test_time_train_step_rejects_zero_steps():
  config = benchmark_config("full_res_fcn", batch=2, size=16, width=0.0625)
  with pytest.raises(ValueError, match="steps and warmup must be >= 1, got steps=0"):
    train_step.time_train_step(config, 3, steps=0)


def test_random_batch_shapes_and_label_range():
  batch = train_step.random_batch(3, 8, 5)
  assert batch["image"].shape == (3, 8, 8, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (3, 8, 8) and batch["label"].dtype == np.int32
  assert batch["label"].min() >= 0 and batch["label"].max() < 5


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--rounds=1"], "error: --rounds must be >= 2, got 1"),
    (["--steps=0"], "error: --steps must be >= 1, got 0"),
    (["--torch_python=/nonexistent/python"],
     "error: --torch_python=/nonexistent/python is not an executable file"),
])
def test_cli_bad_flags_are_one_line(args, message):
  result = _cli(*args)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == message


def _twin_shapes_hwio(twin, torch) -> list[tuple]:
  """Parameter shapes of a PyTorch module in our layout (kernels HWIO)."""
  shapes = []
  for module in twin.modules():
    for param_name, param in module.named_parameters(recurse=False):
      shape = tuple(param.shape)
      if param_name == "weight" and isinstance(module, torch.nn.Conv2d):
        shape = (shape[2], shape[3], shape[1], shape[0])  # (O, I, H, W)
      elif param_name == "weight" and isinstance(module, torch.nn.ConvTranspose2d):
        shape = (shape[2], shape[3], shape[0], shape[1])  # (I, O, H, W)
      shapes.append(shape)
  return sorted(shapes)


@pytest.mark.parametrize("name", ["unet", "fcn8s"])
def test_torch_twins_have_our_layers(name):
  """Same parameter shapes and output shape as the seg_jax model the benchmark builds."""
  torch = pytest.importorskip("torch")
  # Imported here: the module imports torch, which is optional (skipped above without it).
  from seg_jax.benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  config = benchmark_config(name, batch=1, size=32, width=0.125)
  model = loop.build_model(config, 5)
  images = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  ours = sorted(tuple(x.shape) for x in jax.tree.leaves(variables["params"]))
  twin = torch_reference.build(name, num_classes=5, width=0.125)
  assert _twin_shapes_hwio(twin, torch) == ours
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  with torch.no_grad():
    assert tuple(twin.eval()(torch.zeros(1, 3, 32, 32)).shape) == (1, 5, *out.shape[1:3])
