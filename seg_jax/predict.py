"""Use a trained run on your own images (the library behind ``experiments.predict``).

:func:`load_predictor` rebuilds the model from the run's ``config.json`` (or a given config)
and restores only ``params`` and ``batch_stats`` from its latest (or chosen) checkpoint.
Pixels are normalised exactly as the input pipeline does (``(pixels / 255 - data.mean) /
data.std``) and images are resized as evaluation does (only ``data.resize='longer_side'``
datasets are rescaled; detection/instance images larger than the training size shrink to it).

Semantic: every image goes through :func:`seg_jax.inference.predict_tiled` with windows of
the training size: an image that fits is mirror-padded into one window (exactly whole-image
prediction), a larger one is cut into overlapping tiles with mirrored borders.
Detection/instance: one padded training-size image per input; boxes and masks are mapped
back to the input's pixels; :func:`coco_results` gives official COCO result records.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from seg_jax import inference, tasks, visualize
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import loop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm")


def _tuples(value):
  """JSON lists back to tuples (model fields such as dilations are tuples in configs)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (``workdir/config.json``, written by the loop)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json in {workdir}; pass --config=NAME")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def restore_variables(workdir: str, step: Optional[int] = None) -> dict:
  """``{'params', 'batch_stats'}`` of checkpoint ``step`` (default: latest) of a run.

  The saved tree is read without a template (no model or optimizer needed) and everything
  but the inference variables is dropped.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}")
  checkpointer = checkpoint_lib.Checkpointer(directory, save_every=1, keep=1 << 30)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {directory}")
    if step is not None and step not in steps:
      raise ValueError(f"no checkpoint for step {step} in {directory}; steps: {sorted(steps)}")
    restored = checkpointer.restore(None, step)
  finally:
    checkpointer.close()
  variables = {"params": jax.tree.map(np.asarray, dict(restored["params"]))}
  if jax.tree_util.tree_leaves(restored.get("batch_stats") or {}):
    variables["batch_stats"] = jax.tree.map(np.asarray, dict(restored["batch_stats"]))
  return variables


@dataclasses.dataclass
class Predictor:
  """A model with its variables and the facts needed to feed it and to name its outputs."""
  config: Any
  model: Any
  variables: dict
  class_names: tuple  # semantic: per label value; detection/instance: per object class
  category_ids: tuple  # COCO ``category_id`` per object class (detection/instance)

  @property
  def task(self) -> str:
    return str(self.config.task)

  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)

  @property
  def mean(self) -> tuple:
    return tuple(self.config.data.mean)

  @property
  def std(self) -> tuple:
    return tuple(self.config.data.std)


def load_predictor(workdir: str, config=None, step: Optional[int] = None) -> Predictor:
  """Model + restored variables of run ``workdir`` (``config`` defaults to its config.json)."""
  from seg_jax.data import builders  # pylint: disable=g-import-not-at-top  # imports TFDS
  config = load_config(workdir) if config is None else config
  spec = builders.dataset_spec(config.data.name)
  model = loop.build_model(config, len(spec.class_names))
  if config.task == "semantic":
    names, ids = tuple(spec.class_names), ()
  else:
    names = tuple(spec.instance_class_names)
    ids = tuple(range(1, len(names) + 1))  # seg_jax's convention: class + 1
    if config.data.name == "coco_instances":
      from seg_jax.data.coco import COCO_CATEGORIES  # pylint: disable=g-import-not-at-top
      ids = tuple(i for i, _ in COCO_CATEGORIES)  # the official ids (with gaps)
  return Predictor(config, model, restore_variables(workdir, step), names, ids)


def read_image(path: str) -> np.ndarray:
  """Any image file -> (H, W, 3) uint8 RGB (EXIF rotation applied, alpha dropped)."""
  with Image.open(path) as picture:
    picture = ImageOps.exif_transpose(picture)
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
      array = np.asarray(picture, np.float64)
      array = array * (255.0 / max(array.max(), 1.0))
      picture = Image.fromarray(np.round(array).astype(np.uint8))
    return np.asarray(picture.convert("RGB"))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a float image as tf.image.resize does (half-pixel centres)."""
  if image.shape[:2] == (height, width):
    return image
  resized = jax.image.resize(jnp.asarray(image), (height, width, image.shape[2]), "bilinear",
                             antialias=False)
  return np.asarray(resized)


def _nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of (..., h, w) maps (pixel centres, as tf 'nearest')."""
  h, w = labels.shape[-2:]
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
  return labels[..., rows[:, None], cols[None, :]]


def _scale(predictor: Predictor, height: int, width: int) -> float:
  """The evaluation pipeline's resize factor for an image of this size."""
  longer = max(height, width)
  if predictor.config.data.get("resize", "none") == "longer_side":
    return predictor.image_size / longer
  return 1.0 if predictor.task == "semantic" else min(1.0, predictor.image_size / longer)


class SemanticSegmenter:
  """Per-pixel labels for images of any size (see the module docstring)."""

  def __init__(self, predictor: Predictor, tile: Optional[int] = None,
               margin: Optional[int] = None, batch_size: int = 4):
    self.predictor = predictor
    self.batch_size = batch_size
    size = predictor.image_size
    out = self._output_size(size)
    if out == size:  # same-padded net: tiles of the training size minus the context
      self.margin = size // 8 if margin is None else int(margin)
      self.tile = size - 2 * self.margin if tile is None else int(tile)
    else:  # valid net: the context it consumes is fixed
      self.margin = (size - out) // 2
      if margin is not None and int(margin) != self.margin:
        raise ValueError(f"--margin={margin}: this valid-padded net consumes {self.margin} px "
                         f"of context per side; leave --margin unset")
      self.tile = out if tile is None else int(tile)
    if self.tile < 1 or self.margin < 0:
      raise ValueError(f"need tile >= 1 and margin >= 0, got tile={self.tile}, "
                       f"margin={self.margin}")
    window = self.tile + 2 * self.margin
    if self._output_size(window) not in (window, self.tile):
      raise ValueError(f"tile {self.tile} + 2 * margin {self.margin} = {window} px windows do "
                       f"not fit the model (training size {size}); pick sizes like it")
    self.valid_net = out != size
    self._predict = inference.make_predict_fn(predictor.model, predictor.variables,
                                              argmax=True)

  def _output_size(self, window: int) -> Optional[int]:
    """Output side of the model for a square window (None if the model refuses it)."""
    x = jax.ShapeDtypeStruct((1, window, window, 3), jnp.float32)
    try:
      out = jax.eval_shape(lambda v, x: self.predictor.model.apply(v, x, train=False),
                           self.predictor.variables, x)
    except (ValueError, TypeError) as error:
      if window == self.predictor.image_size:
        raise ValueError(f"the model rejects its training size {window}: {error}") from None
      return None
    return int(out.shape[1])

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 labels."""
    predictor = self.predictor
    height, width = image.shape[:2]
    scale = _scale(predictor, height, width)
    if scale != 1.0:  # longer_side datasets: the net was trained at this scale
      pixels = inference.normalize_image(image, predictor.mean, predictor.std)
      pixels = _resize(pixels, max(round(height * scale), 1), max(round(width * scale), 1))
      kwargs = {}
    else:  # uint8 windows, normalised one at a time (large images stay compact)
      pixels, kwargs = image, {"mean": predictor.mean, "std": predictor.std}
    size = predictor.image_size
    fits = max(pixels.shape[:2]) <= size and not self.valid_net
    tile, margin = (size, 0) if fits else (self.tile, self.margin)
    labels = inference.predict_tiled(self._predict, pixels, tile=tile, margin=margin,
                                     batch_size=1 if fits else self.batch_size, argmax=True,
                                     **kwargs)
    return _nearest(labels, height, width) if labels.shape != (height, width) else labels


class Detector:
  """Boxes (and masks) for images of any size, in the input's pixels."""

  def __init__(self, predictor: Predictor):
    self.predictor = predictor
    task = tasks.get_task(predictor.task)
    self._predict = jax.jit(lambda variables, images: task.predict(
        predictor.model, variables, {"image": images}, predictor.config))

  def __call__(self, image: np.ndarray) -> dict:
    """(H, W, 3) uint8 -> score-sorted ``boxes`` (N, 4) xyxy, ``scores``, ``classes``
    (0-based object classes) and, if the model predicts them, ``masks`` (N, H, W) bool."""
    predictor, size = self.predictor, self.predictor.image_size
    height, width = image.shape[:2]
    scale = _scale(predictor, height, width)
    rh, rw = max(round(height * scale), 1), max(round(width * scale), 1)
    pixels = _resize(inference.normalize_image(image, predictor.mean, predictor.std), rh, rw)
    padded = np.zeros((1, size, size, 3), np.float32)  # 0 = the mean, as the pipeline pads
    padded[0, :min(rh, size), :min(rw, size)] = pixels[:size, :size]
    out = jax.tree.map(lambda x: np.asarray(x)[0], self._predict(predictor.variables, padded))
    keep = np.asarray(out.get("valid", np.ones_like(out["scores"], bool)), bool)
    result = {"scores": out["scores"][keep].astype(np.float32),
              "classes": out["classes"][keep].astype(np.int64)}
    boxes = out["boxes"][keep].astype(np.float64) / scale
    result["boxes"] = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    if "masks" in out:
      masks = np.asarray(out["masks"][keep], bool)[:, :rh, :rw]
      result["masks"] = _nearest(masks, height, width)
    return result


def coco_results(detections: dict, image_id: int, file_name: str,
                 category_ids: tuple) -> list[dict]:
  """COCO result records (``image_id, category_id, bbox`` xywh, ``score``, RLE
  ``segmentation`` when masks exist) plus ``file_name`` for readers without an image id."""
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top  # [data] extra
  records = []
  for i, (box, score, cls) in enumerate(zip(detections["boxes"], detections["scores"],
                                            detections["classes"])):
    x0, y0, x1, y1 = (float(v) for v in box)
    record = {"image_id": int(image_id), "file_name": file_name,
              "category_id": int(category_ids[int(cls)]),
              "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
              "score": round(float(score), 5)}
    if "masks" in detections:
      rle = mask_utils.encode(np.asfortranarray(detections["masks"][i].astype(np.uint8)))
      record["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                "counts": rle["counts"].decode("ascii")}
    records.append(record)
  return records


def semantic_pictures(image: np.ndarray, labels: np.ndarray, class_names) -> np.ndarray:
  """``input | prediction | overlay`` (upscaled if small) with a legend of the classes shown.

  The overlay tints the objects only: a 'background' class 0 leaves the image as it is.
  """
  colors = visualize.palette()
  factor = visualize.upscale_factor(*labels.shape)
  colored = visualize.colorize(labels, colors)
  objects = labels != 0 if class_names and class_names[0] == "background" else None
  panels = [image, colored, visualize.blend(image, colored, 0.6, objects)]
  strip = visualize.side_by_side([visualize.upscale(p, factor) for p in panels],
                                 ["input", "prediction", "overlay"])
  return visualize.with_legend(strip, *visualize.class_legend([labels], class_names, colors))


def detection_picture(image: np.ndarray, detections: dict, class_names,
                      score_threshold: float) -> np.ndarray:
  """``input | detections with score >= threshold`` (tags: class name and score)."""
  colors = visualize.palette()[1:]  # skip black: class 0 must show on dark images
  keep = detections["scores"] >= score_threshold
  factor = visualize.upscale_factor(*image.shape[:2])
  big = visualize.upscale(image, factor)
  classes = detections["classes"][keep]
  tags = [f"{class_names[c] if c < len(class_names) else c} {s:.2f}"
          for c, s in zip(classes, detections["scores"][keep])]
  masks = detections["masks"][keep] if "masks" in detections else None
  drawn = visualize.draw_detections(
      big, detections["boxes"][keep] * factor, tags, colors[classes % len(colors)],
      None if masks is None else visualize.upscale(masks.transpose(1, 2, 0), factor)
      .transpose(2, 0, 1))
  return visualize.side_by_side([big, drawn], ["input", f"detections (score >= "
                                                        f"{score_threshold:g})"])


def list_images(inputs) -> tuple[list[str], list[str]]:
  """Files named in ``inputs`` plus the image files inside named folders (sorted, not
  recursive); returns ``(files, errors)`` with a message per input that does not exist."""
  files, errors = [], []
  for item in inputs:
    if os.path.isdir(item):
      files.extend(sorted(os.path.join(item, f) for f in os.listdir(item)
                          if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")))
    elif os.path.exists(item):
      files.append(item)
    else:
      errors.append(f"{item}: no such file or folder")
  return files, errors


def _write_json(path: str, records: list) -> None:
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w") as f:
    json.dump(records, f)
  os.replace(temporary, path)


@dataclasses.dataclass
class Summary:
  written: list  # output paths
  failed: list   # one-line messages ("path: reason")


def predict_files(predictor: Predictor, files, output_dir: str, *, tile: Optional[int] = None,
                  margin: Optional[int] = None, batch_size: int = 4,
                  score_threshold: float = 0.5, progress: bool = False,
                  on_error=None) -> Summary:
  """Predicts every file and writes the outputs named after its stem into ``output_dir``.

  Semantic: ``<stem>.png`` (palette PNG of class indices) and ``<stem>_overlay.png``.
  Detection/instance: ``<stem>_detections.png`` and, for all images, ``detections.json``
  (COCO results; ``image_id`` is the stem when it is a number, as in COCO's file names,
  else the position in ``files``). A file that cannot be read or predicted is skipped and
  reported through ``on_error(message)``; every output is written atomically.
  """
  os.makedirs(output_dir, exist_ok=True)
  semantic = predictor.task == "semantic"
  run = (SemanticSegmenter(predictor, tile, margin, batch_size) if semantic
         else Detector(predictor))
  summary, records, stems = Summary([], []), [], {}
  for index, path in enumerate(tqdm(files, disable=not progress, unit="image",
                                    dynamic_ncols=True)):
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
      if stem in stems:
        raise ValueError(f"output name {stem!r} is already used by {stems[stem]}")
      image = read_image(path)
      if semantic:
        labels = run(image)
        picture = semantic_pictures(image, labels, predictor.class_names)
        summary.written.append(visualize.save_png(
            os.path.join(output_dir, f"{stem}.png"), labels, visualize.palette()))
        name = f"{stem}_overlay.png"
      else:
        detections = run(image)
        image_id = int(stem) if stem.isdigit() else index
        records += coco_results(detections, image_id, os.path.basename(path),
                                predictor.category_ids)
        picture = detection_picture(image, detections, predictor.class_names, score_threshold)
        name = f"{stem}_detections.png"
      summary.written.append(visualize.save_png(os.path.join(output_dir, name), picture))
      stems[stem] = path
    except Exception as error:  # pylint: disable=broad-except  # skip the file, keep going
      message = f"{path}: {type(error).__name__}: {error}".splitlines()[0]
      summary.failed.append(message)
      if on_error is not None:
        on_error(message)
  if not semantic:
    path = os.path.join(output_dir, "detections.json")
    _write_json(path, records)
    summary.written.append(path)
  return summary
