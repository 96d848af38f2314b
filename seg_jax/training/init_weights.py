"""``config.init_weights``: start a run from a weights file or from another seg_jax run.

* A **file** (``.safetensors``/``.npz``/``.pth``) is converted by the model's family
  (``seg_jax.models.load_pretrained``): ImageNet VGG(-BN)/Caffe VGG for VGG, FCN, SegNet and
  DeconvNet; torchvision ResNet for the DETR and Mask R-CNN backbones.
* A **run directory** (a workdir, its ``checkpoints`` or one ``checkpoints/<step>``) is
  transferred by path and shape: every parameter and BatchNorm statistic whose path and
  shape match is copied (or only those under ``config.init_weights_scopes``). The model's
  family may first map the run onto its layout (``seg_jax.models.adapt_transferred``: a VGG
  classifier's dense fc6/fc7 become FCN's convolutions). What was copied, newly initialised
  and not used is printed; when nothing matches, or a common layer has another shape, a
  one-line ``ValueError`` names the layer and both shapes.

This is how the FCN chain is staged: classifier -> FCN-32s -> FCN-16s -> FCN-8s, each run
started with ``--config.init_weights=<previous run dir>``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from seg_jax import models
from seg_jax import weights as weights_lib
from seg_jax.training import checkpoint as checkpoint_lib

Tree = dict[str, Any]
COLLECTIONS = ("params", "batch_stats")


def to_numpy_dict(tree) -> Any:
  """Nested mappings (FrozenDict, flax state) -> plain dicts of numpy arrays."""
  if hasattr(tree, "items"):
    return {k: to_numpy_dict(v) for k, v in tree.items()}
  return np.asarray(tree)


def checkpoint_variables(path: str) -> Tree:
  """``{'params', 'batch_stats'}`` of the latest checkpoint of a seg_jax run directory."""
  path = os.path.abspath(path)
  step = None
  if os.path.basename(path).isdigit() and os.path.isdir(path):
    path, step = os.path.dirname(path), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  if not checkpoint_lib.saved_steps(path):
    raise ValueError(f"init_weights {path}: directory has no seg_jax checkpoint")
  # Read-only (no orbax manager that would tidy a running job's directory); only the
  # variables are read; an unreadable newest checkpoint falls back to the previous one.
  _, restored = checkpoint_lib.restore_variables(path, step, collections=COLLECTIONS)
  return {k: to_numpy_dict(restored.get(k) or {}) for k in COLLECTIONS}


def _flatten(tree: Tree, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(_flatten(value, path + "/"))
    else:
      out[path] = value
  return out


def _unflatten(flat: dict[str, Any]) -> Tree:
  out: Tree = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return out


def transfer(source: Tree, target: Tree, *, scopes: Optional[Sequence[str]] = None,
             source_name: str = "run") -> tuple[Tree, dict[str, list[str]]]:
  """Copies leaves of ``source`` into ``target`` where path and shape match.

  Both are ``{'params': ..., 'batch_stats': ...}``. With ``scopes`` only paths under those
  top-level names are considered and each scope must exist on both sides. A path present on
  both sides with different shapes is an error (the run does not fit the model: other
  width, other classes): restrict the copy with ``scopes`` instead. Returns the new
  variables and a report ``{'copied', 'new', 'unused'}`` (lists of ``collection/path``).
  """
  scopes = tuple(scopes or ())
  for scope in scopes:
    if scope not in source.get("params", {}) or scope not in target.get("params", {}):
      raise ValueError(f"init_weights {source_name}: no {scope!r} parameters in the "
                       f"checkpoint or the model")
  report: dict[str, list[str]] = {"copied": [], "new": [], "unused": []}
  out: Tree = {}
  for collection in COLLECTIONS:
    have = _flatten(source.get(collection, {}) or {})
    want = _flatten(target.get(collection, {}) or {})
    merged = {}
    for path, current in want.items():
      name = f"{collection}/{path}"
      in_scope = not scopes or path.split("/")[0] in scopes
      if not in_scope or path not in have:
        merged[path] = current
        report["new"].append(name)
        continue
      value = have[path]
      if np.shape(value) != np.shape(current):
        hint = "" if scopes else (" (a run that does not fit; to copy only some layers set "
                                  "init_weights_scopes)")
        raise ValueError(f"init_weights {source_name}: {path} has shape {np.shape(value)} in "
                         f"the run, the model expects {np.shape(current)}{hint}")
      merged[path] = np.asarray(value, np.asarray(current).dtype)
      report["copied"].append(name)
    report["unused"] += [f"{collection}/{p}" for p in have if p not in want and
                         (not scopes or p.split("/")[0] in scopes)]
    out[collection] = _unflatten(merged)
  if not report["copied"]:
    raise ValueError(f"init_weights {source_name}: nothing in the run matches the model "
                     f"(no common layer names)")
  return out, report


def _layers(names: list[str]) -> str:
  """'params/conv1_1/kernel', 'params/conv1_1/bias', ... -> 'conv1_1, conv1_2, ...' (short)."""
  layers = []
  for name in names:
    layer = name.split("/")[1]
    if layer not in layers:
      layers.append(layer)
  text = ", ".join(layers[:12])
  return text + (f", ... ({len(layers)} layers)" if len(layers) > 12 else "")


def format_report(report: dict[str, list[str]], source_name: str) -> str:
  lines = [f"init_weights {source_name}: copied {len(report['copied'])} tensors "
           f"({_layers(report['copied'])})"]
  if report["new"]:
    lines.append(f"  newly initialised {len(report['new'])}: {_layers(report['new'])}")
  if report["unused"]:
    lines.append(f"  not used from the run {len(report['unused'])}: {_layers(report['unused'])}")
  return "\n".join(lines)


def load_init_weights(config, params, batch_stats=None, *, verbose: bool = True):
  """Loads ``config.init_weights`` into the variables; returns ``(params, batch_stats)``."""
  batch_stats = {} if batch_stats is None else batch_stats
  path = config.init_weights
  if not path:
    return params, batch_stats
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise ValueError(f"init_weights file not found: {path}")
  target = {"params": to_numpy_dict(params), "batch_stats": to_numpy_dict(batch_stats)}
  fields = dict(config.model)
  name = fields.pop("name")
  if os.path.isdir(path):
    source = models.adapt_transferred(name, checkpoint_variables(path), target)
    scopes = config.init_weights_scopes
    variables, report = transfer(source, target, scopes=scopes, source_name=path)
    if verbose and jax.process_index() == 0:
      print(format_report(report, path), flush=True)
  else:
    state = weights_lib.read_state_dict(path)
    variables = models.load_pretrained(name, state, target, source=path, **fields)
  return variables["params"], variables.get("batch_stats", {})
