"""Use a trained run on your own images (the library behind ``experiments.predict``).

:func:`load_predictor` rebuilds the model from the run's ``config.json`` (or a given config)
and restores only ``params`` and ``batch_stats`` from its newest readable (or chosen)
checkpoint. Pixels are normalised exactly as the input pipeline does (``data.preprocessing``:
``(pixels / 255 - data.mean) / data.std``, or Caffe's BGR 0..255 minus the mean pixel) and
images are resized as evaluation does (``data.resize``).

Semantic: every image goes through :func:`seg_jax.inference.predict_tiled` with windows of
the training size: an image that fits is mirror-padded into one window (exactly whole-image
prediction), a larger one is cut into overlapping tiles with mirrored borders
(``resize='original'`` runs predict the whole image at its own size).
Detection/instance: one padded training-size input per image with its ``pad_mask`` (True on
the padding: DETR attends to the content and gives boxes relative to it), as evaluation
builds them; the detections are mapped back to the input's pixels by
:func:`seg_jax.coco_eval.results_for_batch` (the official results format: ``bbox`` xywh, COCO
``category_id``, RLE ``segmentation``).
Needs the ``[data]`` extra (TFDS for the class names, pycocotools for the results).
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
from pycocotools import mask as mask_utils
from tqdm import tqdm

from seg_jax import coco_eval, inference, tasks, visualize
from seg_jax.data import augment, builders, pipeline
from seg_jax.training import checkpoint as checkpoint_lib
from seg_jax.training import config as config_lib
from seg_jax.training import loop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm")


def _tuples(value):
  """JSON lists back to tuples (model fields such as dilations are tuples in configs)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (``workdir/config.json``, written by the loop).

  Laid over ``base_config`` of its dataset and task, so a run saved before a field existed
  gets that field's default (the value the code used then).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json in {workdir}; pass --config=NAME")
  with open(path) as f:
    saved = _tuples(json.load(f))
  config = config_lib.base_config(saved["data"]["name"], saved["task"])
  config.update(saved)
  return config


def restore_variables(workdir: str, step: Optional[int] = None,
                      template: Optional[dict] = None) -> dict:
  """``{'params'[, 'batch_stats']}`` of checkpoint ``step`` (default: newest readable).

  Only these collections are read (never the optimizer state); with a ``template``
  (variables of the model to fill) a run that does not fit names the layer and shapes.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}")
  _, restored = checkpoint_lib.restore_variables(directory, step, template)
  variables = {"params": restored["params"]}
  if jax.tree_util.tree_leaves(restored.get("batch_stats") or {}):
    variables["batch_stats"] = restored["batch_stats"]
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
  def resize(self) -> str:
    return str(self.config.data.resize)

  def window_normalization(self) -> Optional[dict]:
    """``predict_tiled``'s ``mean``/``std`` for uint8 windows (None for Caffe inputs)."""
    data = self.config.data
    if data.preprocessing == "caffe":
      return None
    return {"mean": tuple(data.mean), "std": tuple(data.std)}

  def normalize(self, image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> the network's float32 input, as ``seg_jax.data.pipeline.normalize``."""
    window = self.window_normalization()
    if window is not None:
      return inference.normalize_image(image, window["mean"], window["std"])
    bgr = np.asarray(image, np.uint8)[..., ::-1].astype(np.float32)
    return bgr - np.asarray(pipeline.CAFFE_BGR_MEAN, np.float32)

  def eval_size(self, height: int, width: int) -> tuple[int, int]:
    """The image size evaluation resizes to (``augment.eval_transform``), before padding."""
    longer, shorter = max(height, width), min(height, width)
    data = self.config.data
    if self.resize == "detr":  # DETR's size rule for the test shorter side
      size = augment.detr_size(height, width, max(data.min_sizes), data.max_size)
      return int(size[0]), int(size[1])
    if self.resize == "longer_side":
      scale = self.image_size / longer
    elif self.resize == "shorter_side":
      scale = min(max(data.min_sizes) / shorter, data.max_size / longer)
    elif self.resize == "original" or self.task == "semantic":
      scale = 1.0  # semantic 'none': large images are tiled instead of shrunk
    else:
      scale = min(1.0, self.image_size / longer)
    if scale == 1.0:
      return height, width
    return max(round(height * scale), 1), max(round(width * scale), 1)


def load_predictor(workdir: str, config=None, step: Optional[int] = None) -> Predictor:
  """Model + restored variables of run ``workdir`` (``config`` defaults to its config.json)."""
  config = load_config(workdir) if config is None else config
  spec = builders.dataset_spec(config.data.name)
  model = loop.build_model(config, len(spec.class_names))
  size = int(config.data.image_size)
  example = {"image": np.zeros((1, size, size, 3), np.float32)}
  shapes = jax.eval_shape(lambda: tasks.get_task(config.task).init_variables(
      model, jax.random.key(0), example))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
  variables = restore_variables(workdir, step, template)
  if config.task == "semantic":
    return Predictor(config, model, variables, tuple(spec.class_names), ())
  names = tuple(spec.instance_class_names)
  ids = tuple(coco_eval.category_ids(config.data.name, len(names)))
  return Predictor(config, model, variables, names, ids)


def read_image(path: str) -> np.ndarray:
  """Any image file -> (H, W, 3) uint8 RGB (EXIF rotation applied, alpha dropped)."""
  with Image.open(path) as picture:
    picture = ImageOps.exif_transpose(picture)
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: to 0..255
      array = np.asarray(picture, np.float64)
      peak = array.max(initial=0)
      divisor = 1.0 if peak <= 255 else 257.0 if peak <= 65535 else peak / 255.0
      picture = Image.fromarray(np.clip(np.round(array / divisor), 0, 255).astype(np.uint8))
    return np.asarray(picture.convert("RGB"))


def _resize(image: np.ndarray, height: int, width: int, antialias: bool = False) -> np.ndarray:
  """Bilinear resize of a float image as tf.image.resize does (half-pixel centres)."""
  if image.shape[:2] == (height, width):
    return image
  resized = jax.image.resize(jnp.asarray(image), (height, width, image.shape[2]), "bilinear",
                             antialias=antialias)
  return np.asarray(resized)


def _nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of (..., h, w) maps (pixel centres, as tf 'nearest')."""
  h, w = labels.shape[-2:]
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
  return labels[..., rows[:, None], cols[None, :]]


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
      hint = (f"e.g. --tile={size - 2 * self.margin} --margin={self.margin}"
              if size > 2 * self.margin else f"e.g. --tile={size} --margin=0")
      raise ValueError(f"tile {self.tile} + 2 * margin {self.margin} = {window} px windows do "
                       f"not fit the model; windows of the training size {size} do ({hint})")
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
    size = predictor.eval_size(height, width)
    window = predictor.window_normalization()
    if size != (height, width) or window is None:
      pixels, kwargs = _resize(predictor.normalize(image), *size), {}
    else:  # uint8 windows, normalised one at a time (large images stay compact)
      pixels, kwargs = image, window
    if predictor.resize == "original":  # trained on whole images: one window, own size
      tile, margin, batch = size, 0, 1
    elif max(size) <= predictor.image_size and not self.valid_net:
      tile, margin, batch = predictor.image_size, 0, 1
    else:
      tile, margin, batch = self.tile, self.margin, self.batch_size
    labels = inference.predict_tiled(self._predict, pixels, tile=tile, margin=margin,
                                     batch_size=batch, argmax=True, **kwargs)
    return _nearest(labels, height, width) if labels.shape != (height, width) else labels


class Detector:
  """COCO result records for images of any size, in the input's pixels."""

  def __init__(self, predictor: Predictor, max_detections: int = 100):
    self.predictor = predictor
    self.max_detections = max_detections
    task = tasks.get_task(predictor.task)
    self._predict = jax.jit(lambda variables, images, pad_mask: task.predict(
        predictor.model, variables, {"image": images, "pad_mask": pad_mask}, predictor.config))

  def __call__(self, image: np.ndarray, image_id: int = 0) -> list[dict]:
    """(H, W, 3) uint8 -> score-sorted records ``image_id, category_id, bbox`` (xywh),
    ``score`` (+ RLE ``segmentation`` when the model predicts masks)."""
    predictor, size = self.predictor, self.predictor.image_size
    height, width = image.shape[:2]
    rh, rw = predictor.eval_size(height, width)
    # the pipeline resizes DETR's inputs with antialiasing (augment.eval_transform)
    pixels = _resize(predictor.normalize(image), rh, rw, antialias=predictor.resize == "detr")
    if predictor.resize == "original":
      padded = pixels[None]
      pad_mask = np.zeros(padded.shape[:3], bool)
    else:  # pad bottom/right with 0 (= the mean after normalisation), as the pipeline
      padded = np.zeros((1, size, size, 3), np.float32)
      padded[0, :min(rh, size), :min(rw, size)] = pixels[:size, :size]
      pad_mask = np.ones((1, size, size), bool)  # True = padding (DETR ignores it)
      pad_mask[0, :rh, :rw] = False
    out = jax.tree.map(np.asarray, self._predict(predictor.variables, padded, pad_mask))
    batch = {"image_id": np.array([image_id]), "orig_size": np.array([[height, width]]),
             "resized_size": np.array([[min(rh, padded.shape[1]), min(rw, padded.shape[2])]])}
    return coco_eval.results_for_batch(batch, out, predictor.category_ids,
                                       max_detections=self.max_detections)


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


def detection_picture(image: np.ndarray, records: list, class_names, category_ids,
                      score_threshold: float) -> np.ndarray:
  """``input | detections with score >= threshold`` (masks tinted, boxes tagged with the
  class name and score), upscaled if small."""
  colors = visualize.palette()[1:]  # skip black: class 0 must show on dark images
  shown = [r for r in records if r["score"] >= score_threshold]
  factor = visualize.upscale_factor(*image.shape[:2])
  big = visualize.upscale(image, factor)
  classes = np.array([category_ids.index(r["category_id"]) for r in shown], np.int64)
  tags = [f"{class_names[c]} {r['score']:.2f}" for c, r in zip(classes, shown)]
  boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in shown)],
                   np.float64).reshape(-1, 4)
  masks = None
  if shown and all("segmentation" in r for r in shown):
    masks = np.stack([visualize.upscale(mask_utils.decode(r["segmentation"]), factor)
                      for r in shown])
  drawn = visualize.draw_detections(big, boxes * factor, tags, colors[classes % len(colors)],
                                    masks)
  return visualize.side_by_side([big, drawn],
                                ["input", f"detections (score >= {score_threshold:g})"])


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
        found = run(image, int(stem) if stem.isdigit() else index)
        picture = detection_picture(image, found, predictor.class_names,
                                    predictor.category_ids, score_threshold)
        name = f"{stem}_detections.png"
      summary.written.append(visualize.save_png(os.path.join(output_dir, name), picture))
      if not semantic:  # only once its picture exists: a skipped file leaves no records
        records += [dict(r, file_name=os.path.basename(path)) for r in found]
      stems[stem] = path
    except Exception as error:  # pylint: disable=broad-except  # skip the file, keep going
      message = f"{path}: {type(error).__name__}: {error}".splitlines()[0]
      summary.failed.append(message)
      if on_error is not None:
        on_error(message)
  if not semantic:
    path = os.path.join(output_dir, "detections.json")
    temporary = f"{path}.{os.getpid()}.tmp"  # same folder: the rename is atomic
    with open(temporary, "w") as f:
      json.dump(records, f)
    os.replace(temporary, path)
    summary.written.append(path)
  return summary
