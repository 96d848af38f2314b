"""The weights table and fetch(): paths the configs use, fake downloads, offline messages."""

import os
import subprocess
import sys

import numpy as np
import pytest

from seg_jax import pretrained

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_local_paths_follow_one_rule_and_match_the_configs(monkeypatch):
  monkeypatch.setenv("HOME", "/home/someone")
  # The file names the VOC configs expect (experiments/configs/voc_base.py).
  assert pretrained.local_path("vgg16") == "/home/someone/.cache/seg_jax/" \
                                           "vgg16.tv_in1k.safetensors"
  assert pretrained.local_path("vgg16_caffe") == "/home/someone/.cache/seg_jax/" \
                                                 "vgg16_caffe.safetensors"
  assert pretrained.local_path("resnet50") == "/home/someone/.cache/seg_jax/" \
                                              "resnet50.tv_in1k.safetensors"
  assert pretrained.local_path("vgg16_caffe", "/w") == "/w/vgg16_caffe.safetensors"
  assert pretrained.local_path("vgg19", "/w") == "/w/vgg19.tv_in1k.safetensors"
  with pytest.raises(ValueError, match="unknown weights 'vgg11'; known: resnet50, vgg16, "):
    pretrained.local_path("vgg11")


def test_fetch_with_a_fake_hub_places_the_file_once(tmp_path, monkeypatch):
  calls = []

  def fake_hub(repo_id, filename, local_dir):
    calls.append((repo_id, filename))
    path = os.path.join(local_dir, filename)
    with open(path, "wb") as f:
      f.write(b"weights of " + repo_id.encode())
    return path

  monkeypatch.setattr(pretrained, "hub_download", fake_hub)
  path = pretrained.fetch("resnet50", str(tmp_path))
  assert path == str(tmp_path / "resnet50.tv_in1k.safetensors")
  assert open(path, "rb").read() == b"weights of timm/resnet50.tv_in1k"
  assert pretrained.fetch("resnet50", str(tmp_path)) == path  # present: no second download
  assert calls == [("timm/resnet50.tv_in1k", "model.safetensors")]
  assert os.listdir(tmp_path) == ["resnet50.tv_in1k.safetensors"]  # no scratch left


def test_offline_fetch_says_what_to_download_where(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise OSError("Name or service not known")

  monkeypatch.setattr(pretrained, "hub_download", offline)
  with pytest.raises(pretrained.WeightsUnavailable) as info:
    pretrained.fetch("vgg16", str(tmp_path))
  message = str(info.value)
  assert "\n" not in message and "OSError: Name or service not known" in message
  assert ("download https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors "
          f"and save it as {tmp_path / 'vgg16.tv_in1k.safetensors'}") in message
  assert os.listdir(tmp_path) == []
  monkeypatch.undo()
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the [weights] extra is missing
  with pytest.raises(pretrained.WeightsUnavailable, match=r"pip install -e '\.\[weights\]'"):
    pretrained.fetch("vgg19", str(tmp_path))


def test_caffe_vgg_is_downloaded_then_converted_with_renamed_keys(tmp_path, monkeypatch):
  state = {"features.0.weight": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
           "classifier.1.weight": np.ones((2, 2), np.float32),
           "classifier.4.bias": np.full(3, 2.0, np.float32),
           "classifier.6.bias": np.zeros(1, np.float32)}
  downloads = []

  def fake_url(url, path):
    downloads.append(url)
    with open(path, "wb") as f:
      np.savez(f, **state)  # stands in for the .pth; read_state_dict reads both

  read = pretrained.weights.read_state_dict
  monkeypatch.setattr(pretrained, "url_download", fake_url)
  monkeypatch.setitem(sys.modules, "torch", None)  # first try: no torch to read the pickle
  with pytest.raises(pretrained.WeightsUnavailable) as info:
    pretrained.fetch("vgg16_caffe", str(tmp_path))
  assert "needs torch" in str(info.value) and f"{tmp_path / 'vgg16_caffe.pth'}" in str(info.value)
  assert sorted(os.listdir(tmp_path)) == ["vgg16_caffe.pth"]  # the download is kept
  # Second try "with torch": the kept file is converted, not downloaded again.
  monkeypatch.setattr(pretrained.weights, "read_state_dict",
                      lambda path: read(path) if path.endswith(".npz") else dict(np.load(path)))
  path = pretrained.fetch("vgg16_caffe", str(tmp_path))
  assert downloads == ["https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth"]
  converted = read(path)
  assert sorted(converted) == ["classifier.0.weight", "classifier.3.bias", "classifier.6.bias",
                               "features.0.weight"]
  np.testing.assert_array_equal(converted["features.0.weight"], state["features.0.weight"])
  np.testing.assert_array_equal(converted["classifier.3.bias"], state["classifier.4.bias"])


def test_cli_offline_is_one_line(tmp_path):
  fake = tmp_path / "fake_site"
  fake.mkdir()
  (fake / "huggingface_hub.py").write_text("raise ImportError('not installed')\n")
  env = dict(os.environ, PYTHONPATH=f"{fake}{os.pathsep}{ROOT}")
  result = subprocess.run([sys.executable, "-m", "experiments.fetch_weights", "--model=vgg19",
                           f"--dest={tmp_path / 'w'}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: could not fetch vgg19 (huggingface_hub is not installed")
  assert line.endswith(f"save it as {tmp_path / 'w' / 'vgg19.tv_in1k.safetensors'}")
