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


def test_cli_without_weights_names_the_file_to_provide(tmp_path):
  with pytest.raises(SystemExit) as error:
    _run(f"--output={tmp_path / 'o.png'}")
  message = str(error.value)
  assert "\n" not in message
  for needle in ("--weights", "vgg19", "vgg19.tv_in1k", "--random_weights"):
    assert needle in message
  with pytest.raises(SystemExit, match="not found"):
    _run(f"--weights={tmp_path / 'missing.safetensors'}")
  assert not os.path.exists(tmp_path / "o.png")


def test_cli_rejects_bad_flags():
  with pytest.raises(SystemExit, match="bogus"):
    _run("--random_weights", "--bogus=1")
  with pytest.raises(SystemExit, match="style_layers"):
    _run("--random_weights", "--depth=16", "--style_layers=relu5_4")
