"""experiments/style_transfer.py run in-process on tiny sizes."""

import os

import numpy as np
import pytest
from PIL import Image

from experiments import style_transfer

# Same VGG/layers/optimiser as the SMALL adam config in test_gatys.py, so the compiled
# step is shared when both files run in one process.
TINY_FLAGS = ["--random_weights", "--width=0.125", "--size=32", "--optimizer=adam"]


def _run(*args):
  style_transfer.main(["style_transfer", *args])


def _png_size(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    return image.size


def test_cli_writes_result_snapshots_and_side_by_side(tmp_path):
  out = tmp_path / "run" / "out.png"  # folder does not exist yet
  _run(*TINY_FLAGS, "--steps=4", "--snapshot_every=2", f"--output={out}")
  assert _png_size(out) == (32, 32)  # astronaut (square) at --size=32
  assert _png_size(tmp_path / "run" / "out_step00002.png") == (32, 32)
  assert _png_size(tmp_path / "run" / "out_step00004.png") == (32, 32)
  width, height = _png_size(tmp_path / "run" / "out_side_by_side.png")
  assert height == 32 and width == 3 * 32 + 2 * 4  # content | style | result, 4px gaps
  assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]


def test_cli_reads_content_and_style_files(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (48, 48, 3), np.uint8)).save(tmp_path / "c.png")
  Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).save(tmp_path / "s.jpg")
  out = tmp_path / "o.png"
  _run(*TINY_FLAGS, "--steps=2", f"--content={tmp_path / 'c.png'}",
       f"--style={tmp_path / 's.jpg'}", f"--output={out}")
  assert _png_size(out) == (32, 32)
  assert _png_size(tmp_path / "o_side_by_side.png")[1] == 32


def _error(capsys, *args):
  """Runs the CLI expecting a failure: exit code 2 and exactly one line ``error: ...``."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    _run(*args)
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


def test_cli_without_weights_names_the_file_to_provide(tmp_path, capsys):
  message = _error(capsys, f"--output={tmp_path / 'o.png'}")
  for needle in ("--weights", "vgg19", "vgg19.tv_in1k", "--random_weights"):
    assert needle in message
  assert "not found" in _error(capsys, f"--weights={tmp_path / 'missing.safetensors'}")
  assert not os.path.exists(tmp_path / "o.png")


def test_cli_rejects_bad_flags(capsys):
  assert "bogus" in _error(capsys, "--random_weights", "--bogus=1")
  assert "style_layers" in _error(capsys, "--random_weights", "--depth=16",
                                  "--style_layers=relu5_4")
  assert "size and scales must be >= 16" in _error(capsys, "--random_weights", "--size=8")


def test_cli_bad_files_are_one_line(tmp_path, capsys):
  not_an_image = tmp_path / "notes.png"
  not_an_image.write_text("not an image")
  message = _error(capsys, *TINY_FLAGS, f"--content={not_an_image}")
  assert message.startswith(f"error: cannot read image '{not_an_image}': ")

  # A .safetensors file cut short: the header promises more bytes than there are.
  from safetensors.numpy import save_file
  weights = tmp_path / "vgg19.safetensors"
  save_file({"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)}, str(weights))
  data = weights.read_bytes()
  weights.write_bytes(data[:len(data) // 2])
  message = _error(capsys, f"--weights={weights}", "--size=32", "--steps=1")
  assert message.startswith(f"error: cannot read weights '{weights}': ")

  # A pickle that would run code: refused (torch weights_only=True), or torch is missing.
  class Exploit:
    def __reduce__(self):
      return (os.system, (f"touch {tmp_path / 'pwned'}",))
  import pickle
  evil = tmp_path / "vgg19.pth"
  evil.write_bytes(pickle.dumps({"features.0.weight": Exploit()}))
  message = _error(capsys, f"--weights={evil}", "--size=32", "--steps=1")
  assert message.startswith(f"error: cannot read weights '{evil}': ")
  assert not os.path.exists(tmp_path / "pwned")


def test_cli_refuses_a_size_that_cannot_fit(tmp_path, capsys):
  message = _error(capsys, "--random_weights", "--size=30000", f"--output={tmp_path / 'o.png'}")
  assert message.startswith("error: size 30000 needs about ")
  assert "GiB (estimate), more than the " in message and "GiB of memory available" in message


def test_cli_bad_output_and_verbose_traceback(tmp_path, capsys):
  folder = tmp_path / "taken"
  folder.mkdir()
  assert "is a directory" in _error(capsys, *TINY_FLAGS, f"--output={folder}")
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert "cannot create the folder" in _error(capsys, *TINY_FLAGS,
                                              f"--output={blocker / 'o.png'}")
  capsys.readouterr()
  with pytest.raises(SystemExit):
    _run(*TINY_FLAGS, "--verbose", f"--output={folder}")
  err = capsys.readouterr().err
  assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
