"""``shapes``: a synthetic segmentation / instance dataset generated offline in seconds.

Each image holds 1-4 shapes (circle, square, triangle, star) of random size, rotation and
colour over a textured background (low-frequency colour gradient + sinusoidal texture +
pixel noise, so colour alone does not separate foreground). Shapes drawn later occlude
earlier ones; an instance's mask and box describe its *visible* part, and a shape that ends
up fully hidden is dropped. Everything is numpy, seeded per (config seed, split, index), so
an example is the same whatever order or process generates it.

Boxes: xyxy in pixels with exclusive max (a mask covering columns 3..7 has x1=3, x2=8), so
box width equals the number of columns covered; stored in TFDS as normalised
``[ymin, xmin, ymax, xmax]`` (``BBoxFeature``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional
import io

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data import _tf  # noqa: F401  (configures TensorFlow before TFDS uses it)

SHAPE_NAMES = ("circle", "square", "triangle", "star")
_SPLIT_IDS = {"train": 0, "validation": 1}
_STAR_INNER_RATIO = 0.45
_MIN_COLOUR_DISTANCE = 0.35


def _centres(start: int, stop: int) -> np.ndarray:
  return np.arange(start, stop, dtype=np.float32) + 0.5


def _polar(ys, xs, cy, cx, angle):
  """Radius and angle (relative to ``angle``) of pixel centres ``ys`` (h,1), ``xs`` (1,w)."""
  dy, dx = ys - cy, xs - cx
  return np.hypot(dy, dx), np.mod(np.arctan2(dy, dx) - angle, 2 * np.pi)


def _regular_polygon(r, phi, radius, sides):
  """Inside test for a regular polygon with circumradius ``radius``, a vertex at phi=0."""
  sector = 2 * np.pi / sides
  t = np.mod(phi, sector)
  # Distance to the edge along the sector's bisector normal is the apothem.
  return r * np.cos(t - sector / 2) <= radius * np.cos(sector / 2)


def _star(r, phi, radius, points=5):
  """Inside test for a star: straight edges between outer and inner vertices."""
  half = np.pi / points
  t = np.mod(phi, 2 * half)
  t = np.where(t > half, 2 * half - t, t)  # mirror into [0, half]
  ax, ay = radius, 0.0  # outer vertex
  inner = radius * _STAR_INNER_RATIO
  bx, by = inner * np.cos(half), inner * np.sin(half)  # inner vertex
  px, py = r * np.cos(t), r * np.sin(t)
  # The origin lies on the negative side of the edge A->B (cross product sign).
  cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
  return cross >= 0


def shape_mask(kind: int, size: int, cy: float, cx: float, radius: float,
               angle: float) -> np.ndarray:
  """Boolean ``(size, size)`` mask of one shape (``kind`` indexes ``SHAPE_NAMES``).

  Pixel (i, j) is inside when its centre (i + 0.5, j + 0.5) is; only the shape's bounding
  window is evaluated.
  """
  y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, size)
  x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, size)
  r, phi = _polar(_centres(y0, y1)[:, None], _centres(x0, x1)[None, :], cy, cx, angle)
  if kind == 0:
    inside = r <= radius
  elif kind == 1:
    inside = _regular_polygon(r, phi, radius, 4)
  elif kind == 2:
    inside = _regular_polygon(r, phi, radius, 3)
  elif kind == 3:
    inside = _star(r, phi, radius)
  else:
    raise ValueError(f"shape kind must be in 0..3, got {kind}")
  mask = np.zeros((size, size), bool)
  mask[y0:y1, x0:x1] = inside
  return mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  ys, xs = _centres(0, size)[:, None] / size, _centres(0, size)[None, :] / size
  c0, c1 = rng.uniform(0.0, 1.0, (2, 3))
  theta = rng.uniform(0, 2 * np.pi)
  ramp = np.clip(0.5 + (np.cos(theta) * (xs - 0.5) + np.sin(theta) * (ys - 0.5)), 0, 1)
  image = c0 + (c1 - c0) * ramp[..., None]
  freq = rng.uniform(1.0, 3.0, 2)
  phase = rng.uniform(0, 2 * np.pi, 2)
  texture = np.sin(2 * np.pi * freq[0] * xs + phase[0]) * np.sin(
      2 * np.pi * freq[1] * ys + phase[1])
  image = image + rng.uniform(0.05, 0.15, 3) * texture[..., None]
  return image


def _shape_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
  """A random colour at least ``_MIN_COLOUR_DISTANCE`` from the local background."""
  for _ in range(20):
    colour = rng.uniform(0.0, 1.0, 3)
    if np.linalg.norm(colour - avoid) >= _MIN_COLOUR_DISTANCE:
      return colour
  return np.where(avoid > 0.5, 0.0, 1.0)  # fallback: far corner of the cube


def render_example(index: int, *, image_size: int = 64, split: str = "train", seed: int = 0,
                   min_size: int = 12, max_size: int = 28, min_shapes: int = 1,
                   max_shapes: int = 4, noise: float = 0.05,
                   centre_jitter: Optional[float] = None) -> dict[str, np.ndarray]:
  """Renders example ``index`` of ``split`` deterministically.

  Returns ``image`` uint8 (H,W,3), ``segmentation`` uint8 (H,W) with 0 = background and
  1..4 = class + 1, ``masks`` bool (N,H,W) visible instance masks, ``labels`` int64 (N,)
  0-based classes, ``boxes`` float32 (N,4) xyxy pixel boxes (exclusive max).
  ``centre_jitter``: place shape centres within this many pixels of the image centre
  (default: anywhere the whole shape fits).
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
  if not 0 < min_size <= max_size <= image_size:
    raise ValueError(f"need 0 < min_size <= max_size <= image_size, got "
                     f"{min_size}, {max_size}, {image_size}")
  if not 0 <= min_shapes <= max_shapes:
    raise ValueError(f"need 0 <= min_shapes <= max_shapes, got {min_shapes}, {max_shapes}")
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  image = _background(rng, image_size)
  owner = np.full((image_size, image_size), -1, np.int64)  # index of the visible shape
  kinds = []
  num = int(rng.integers(min_shapes, max_shapes + 1))
  for k in range(num):
    kind = int(rng.integers(0, len(SHAPE_NAMES)))
    diameter = rng.uniform(min_size, max_size)
    radius = diameter / 2
    if centre_jitter is None:
      cy, cx = rng.uniform(radius, image_size - radius, 2)
    else:  # near the centre, like the central object of an ImageNet photo
      low = max(radius, image_size / 2 - centre_jitter)
      cy, cx = rng.uniform(low, image_size - low, 2)
    mask = shape_mask(kind, image_size, cy, cx, radius, rng.uniform(0, 2 * np.pi))
    local = image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1))
    colour = _shape_colour(rng, local)
    shading = rng.uniform(-0.08, 0.08, 3)
    rows = np.nonzero(mask)[0].astype(np.float32) + 0.5
    image[mask] = colour + shading * ((rows - cy) / max(radius, 1.0))[:, None]
    owner[mask] = k
    kinds.append(kind)
  image = image + noise * rng.standard_normal(image.shape, np.float32)
  image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

  masks, labels, boxes = [], [], []
  for k, kind in enumerate(kinds):
    visible = owner == k
    if not visible.any():
      continue  # fully occluded: not an instance any more
    rows, cols = np.nonzero(visible.any(axis=1))[0], np.nonzero(visible.any(axis=0))[0]
    boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    masks.append(visible)
    labels.append(kind)
  segmentation = np.zeros((image_size, image_size), np.uint8)
  for mask, label in zip(masks, labels):
    segmentation[mask] = label + 1
  return {
      "image": image,
      "segmentation": segmentation,
      "masks": np.asarray(masks, bool).reshape(-1, image_size, image_size),
      "labels": np.asarray(labels, np.int64),
      "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
  }


def _png(array: np.ndarray) -> bytes:
  """PNG bytes via PIL: much faster than TFDS' per-call TensorFlow encoder."""
  from PIL import Image  # local: only needed while preparing
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Image size, split sizes and shape statistics of a ``shapes`` variant."""

  image_size: int = 64
  num_train: int = 8000
  num_validation: int = 256
  min_size: int = 12
  max_size: int = 28
  min_shapes: int = 1
  max_shapes: int = 4
  noise: float = 0.05
  seed: int = 0
  centre_jitter: Optional[float] = None

  def render(self, index: int, split: str) -> dict[str, np.ndarray]:
    """Example ``index`` of ``split`` exactly as this variant's dataset holds it."""
    return render_example(index, image_size=self.image_size, split=split, seed=self.seed,
                          min_size=self.min_size, max_size=self.max_size,
                          min_shapes=self.min_shapes, max_shapes=self.max_shapes,
                          noise=self.noise, centre_jitter=self.centre_jitter)


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Synthetic shapes with semantic masks and visible-part instance masks/boxes."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "8000 training images (was 2000): small nets overfitted 2000; "
                            "configs cls128, single128 and single64 added later (others "
                            "unchanged)."}
  BUILDER_CONFIGS = [
      ShapesConfig(name="64", description="64x64, shapes 12-28 px (default)."),
      ShapesConfig(name="128", description="128x128, shapes 24-56 px.", image_size=128,
                   min_size=24, max_size=56),
      ShapesConfig(name="cls128", description="128x128, 1-6 shapes of 12-28 px (the objects "
                   "of the 64 px default on a larger canvas): classifier pretraining.",
                   image_size=128, max_shapes=6, num_validation=512),
      ShapesConfig(name="single128", description="128x128, exactly one shape of 20-48 px "
                   "within 24 px of the centre (one label per image, a large central object "
                   "as in ImageNet photos): classifier pretraining.", image_size=128,
                   min_size=20, max_size=48, min_shapes=1, max_shapes=1, num_validation=512,
                   centre_jitter=24.0),
      ShapesConfig(name="single64", description="64x64, exactly one shape of 12-28 px within "
                   "12 px of the centre (the objects of the 64 px default, one centred per "
                   "image): DeconvNet's first, easy training stage.", min_shapes=1,
                   max_shapes=1, centre_jitter=12.0),
      ShapesConfig(name="tiny", description="32x32, 8 train / 4 validation (tests).",
                   image_size=32, num_train=8, num_validation=4, min_size=8, max_size=16),
  ]
  DEFAULT_CONFIG_NAME = "64"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description="Synthetic circles, squares, triangles and stars on textured noise.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3)),
            "segmentation": tfds.features.Image(shape=(size, size, 1)),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=list(SHAPE_NAMES)),
                "mask": tfds.features.Image(shape=(size, size, 1)),
            }),
        }),
        supervised_keys=("image", "segmentation"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    return {
        "train": self._generate_examples("train", cfg.num_train),
        "validation": self._generate_examples("validation", cfg.num_validation),
    }

  def _generate_examples(self, split: str, count: int):
    cfg = self.builder_config
    size = cfg.image_size
    for index in range(count):
      ex = cfg.render(index, split)
      # BBoxFeature wants normalised [ymin, xmin, ymax, xmax].
      bboxes = ex["boxes"][:, [1, 0, 3, 2]] / size
      yield index, {
          "image": _png(ex["image"]),
          "segmentation": _png(ex["segmentation"]),
          "objects": {
              "bbox": bboxes.astype(np.float32).reshape(-1, 4),
              "label": ex["labels"],
              "mask": [_png(m.astype(np.uint8)) for m in ex["masks"]],
          },
      }
