"""ImageNet weight files: where each comes from and where seg_jax looks for it (one table).

``python -m experiments.fetch_weights --model=NAME`` calls :func:`fetch`; configs point
``init_weights`` at :func:`local_path` (``~/.cache/seg_jax/<file>``). Hugging Face files are
downloaded with ``huggingface_hub`` (optional: ``pip install -e .[weights]``); the Caffe
VGG-16 is a PyTorch pickle on a web server, fetched with urllib and converted to
``.safetensors`` (torch is needed once for that, never for training). Files are written
under a temporary name and renamed when complete. Without network (or the optional
package) :func:`fetch` raises :class:`WeightsUnavailable` whose one-line message says which
file to download from where and where to put it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.request
from typing import Optional

from tqdm import tqdm

from seg_jax import weights

CACHE_DIR = os.path.join("~", ".cache", "seg_jax")


@dataclasses.dataclass(frozen=True)
class WeightFile:
  """One published ImageNet file and its place on disk."""
  filename: str                  # name inside the cache directory
  url: str                       # direct download link (also shown when offline)
  description: str
  hub_repo: Optional[str] = None  # Hugging Face repo holding ``hub_filename``
  hub_filename: str = "model.safetensors"
  # A PyTorch pickle to convert to .safetensors, with keys renamed to today's torchvision
  # layout (jcjohnson's Caffe conversion predates it: Dropout came first in the classifier).
  torch_key_renames: Optional[dict] = None


_HF = "https://huggingface.co/{repo}/resolve/main/model.safetensors"
WEIGHTS: dict[str, WeightFile] = {
    "vgg16": WeightFile("vgg16.tv_in1k.safetensors", _HF.format(repo="timm/vgg16.tv_in1k"),
                        "torchvision VGG-16 (timm layout); RGB 0..1, ImageNet mean/std",
                        hub_repo="timm/vgg16.tv_in1k"),
    "vgg19": WeightFile("vgg19.tv_in1k.safetensors", _HF.format(repo="timm/vgg19.tv_in1k"),
                        "torchvision VGG-19 (timm layout); RGB 0..1, ImageNet mean/std",
                        hub_repo="timm/vgg19.tv_in1k"),
    "resnet50": WeightFile("resnet50.tv_in1k.safetensors",
                           _HF.format(repo="timm/resnet50.tv_in1k"),
                           "torchvision ResNet-50 v1 (same keys as torchvision)",
                           hub_repo="timm/resnet50.tv_in1k"),
    "vgg16_caffe": WeightFile(
        "vgg16_caffe.safetensors",
        "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth",
        "the Caffe VGG-16 of the FCN paper (torchvision layout); BGR 0..255 minus the mean",
        torch_key_renames={"classifier.1.": "classifier.0.", "classifier.4.": "classifier.3."}),
}


class WeightsUnavailable(RuntimeError):
  """The file is not on disk and could not be downloaded (message: what to do by hand)."""


def _spec(name: str) -> WeightFile:
  if name not in WEIGHTS:
    raise ValueError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
  return WEIGHTS[name]


def local_path(name: str, dest: Optional[str] = None) -> str:
  """Where seg_jax keeps weights ``name``: ``<dest or ~/.cache/seg_jax>/<file name>``."""
  return os.path.join(os.path.expanduser(dest or CACHE_DIR), _spec(name).filename)


def manual_instructions(name: str, dest: Optional[str] = None) -> str:
  """One line: which file to download from where and where to put it."""
  spec = _spec(name)
  path = local_path(name, dest)
  if spec.torch_key_renames:
    return (f"download {spec.url}, save it as {os.path.splitext(path)[0]}.pth and rerun this "
            f"command with torch installed (it converts the file to {path})")
  return f"download {spec.url} and save it as {path}"


def hub_download(repo_id: str, filename: str, local_dir: str) -> str:
  """``huggingface_hub.hf_hub_download`` into ``local_dir``; returns the file's path."""
  from huggingface_hub import hf_hub_download  # optional dependency (the [weights] extra)
  return hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir)


def url_download(url: str, path: str) -> None:
  """Streams ``url`` into ``path`` with a progress bar."""
  with urllib.request.urlopen(url, timeout=30) as response, open(path, "wb") as out:
    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
      while chunk := response.read(1 << 20):
        out.write(chunk)
        bar.update(len(chunk))


def _convert_torch_file(source: str, target: str, renames: dict) -> None:
  """``.pth`` -> ``.safetensors`` with key prefixes renamed (torch needed, via weights)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = weights.read_state_dict(source)
  renamed = {}
  for key, value in state.items():
    for old, new in renames.items():
      if key.startswith(old):
        key = new + key[len(old):]
    renamed[key] = value
  temporary = target + ".tmp"
  save_file(renamed, temporary)
  os.replace(temporary, target)


def fetch(name: str, dest: Optional[str] = None) -> str:
  """Path of weights ``name`` on disk, downloading (and converting) them if missing.

  Raises :class:`WeightsUnavailable` (one line: the cause and the manual remedy) when the
  download is impossible.
  """
  spec = _spec(name)
  path = local_path(name, dest)
  if os.path.exists(path):
    return path
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  scratch = tempfile.mkdtemp(dir=directory, prefix=f".{name}-download-")
  try:
    if spec.hub_repo:
      downloaded = hub_download(spec.hub_repo, spec.hub_filename, scratch)
      os.replace(downloaded, path)
    else:
      torch_file = os.path.splitext(path)[0] + ".pth"  # kept: converting may need a rerun
      if not os.path.exists(torch_file):
        url_download(spec.url, os.path.join(scratch, "download"))
        os.replace(os.path.join(scratch, "download"), torch_file)
      _convert_torch_file(torch_file, path, spec.torch_key_renames or {})
  except Exception as error:  # ImportError, no network, HTTP errors, no torch: same remedy
    cause = f"{type(error).__name__}: {str(error).split('. ')[0]}".splitlines()[0]
    if isinstance(error, ImportError) and spec.hub_repo:
      cause = "huggingface_hub is not installed: pip install -e '.[weights]'"
    raise WeightsUnavailable(f"could not fetch {name} ({cause}); "
                             f"{manual_instructions(name, dest)}") from None
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return path
