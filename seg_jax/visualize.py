"""Pictures a person can read: colour maps, upscaled panels with titles, legends, boxes.

Everything works on uint8 RGB numpy arrays (H, W, 3) and returns new arrays; text is drawn
with Pillow's built-in scalable font. Small images are enlarged with nearest-neighbour
(every pixel stays a visible square, no invented colours) so the longer side reaches
``MIN_SIZE``. :func:`save_png` writes through a temporary file and a rename, so a PNG is
either complete or absent.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIZE = 256  # px: the longer side of a panel after upscaling
IGNORE_LABEL = 255
_FONT_SIZE = 13
_GAP = 4


def palette(num_colors: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map (bit-interleaved class index), 255 -> white."""
  colors = np.zeros((num_colors, 3), np.uint8)
  for index in range(num_colors):
    value, rgb = index, [0, 0, 0]
    for shift in range(7, -1, -1):
      for channel in range(3):
        rgb[channel] |= ((value >> channel) & 1) << shift
      value >>= 3
    colors[index] = rgb
  if num_colors > 255:
    colors[255] = 255
  return colors


def colorize(labels: np.ndarray, colors: Optional[np.ndarray] = None) -> np.ndarray:
  """(H, W) class indices -> (H, W, 3) uint8 with the VOC palette (index mod 256)."""
  colors = palette() if colors is None else np.asarray(colors, np.uint8)
  return colors[np.asarray(labels).astype(np.int64) % len(colors)]


def upscale_factor(height: int, width: int, min_size: int = MIN_SIZE) -> int:
  """Smallest integer factor making the longer side at least ``min_size`` (1 if already)."""
  return max(1, math.ceil(min_size / max(height, width, 1)))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour enlargement by an integer ``factor`` (pixels become squares)."""
  if factor == 1:
    return np.asarray(image)
  return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def blend(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5,
          where: Optional[np.ndarray] = None) -> np.ndarray:
  """``(1 - alpha) * image + alpha * colors`` (only where ``where`` is True, if given)."""
  mixed = (1 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(colors, np.float32)
  out = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
  if where is not None:
    out = np.where(np.asarray(where, bool)[..., None], out, image)
  return out


def font(size: int = _FONT_SIZE) -> ImageFont.ImageFont:
  return ImageFont.load_default(size=size)


def _text_width(text: str, face) -> int:
  left, _, right, _ = face.getbbox(text)
  return int(math.ceil(right - left))


def titled(image: np.ndarray, title: str) -> np.ndarray:
  """The image with a white title strip above it."""
  face = font()
  strip = Image.new("RGB", (image.shape[1], _FONT_SIZE + 6), "white")
  ImageDraw.Draw(strip).text((2, 2), title, fill="black", font=face)
  return np.concatenate([np.asarray(strip), np.asarray(image, np.uint8)], axis=0)


def side_by_side(panels: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None,
                 gap: int = _GAP) -> np.ndarray:
  """Panels of equal height in a row with white gaps, each optionally titled."""
  if titles is not None:
    panels = [titled(p, t) for p, t in zip(panels, titles)]
  height = max(p.shape[0] for p in panels)
  parts = []
  for i, panel in enumerate(panels):
    if i:
      parts.append(np.full((height, gap, 3), 255, np.uint8))
    pad = height - panel.shape[0]
    parts.append(np.pad(np.asarray(panel, np.uint8), ((0, pad), (0, 0), (0, 0)),
                        constant_values=255))
  return np.concatenate(parts, axis=1)


def legend(names: Sequence[str], colors: Sequence, width: int) -> np.ndarray:
  """A white strip ``width`` px wide: a colour swatch and a name per entry, in a grid."""
  face = font()
  swatch, pad = _FONT_SIZE, 6
  cell = max([_text_width(n, face) for n in names] + [1]) + swatch + 3 * pad
  columns = max(1, min(len(names), width // cell))
  rows = max(1, math.ceil(len(names) / columns))
  line = swatch + pad
  canvas = Image.new("RGB", (max(width, 1), rows * line + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for i, (name, color) in enumerate(zip(names, colors)):
    x, y = pad + (i % columns) * cell, pad + (i // columns) * line
    draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in color),
                   outline=(0, 0, 0))
    draw.text((x + swatch + pad // 2, y - 1), name, fill="black", font=face)
  return np.asarray(canvas)


def with_legend(image: np.ndarray, names: Sequence[str], colors: Sequence) -> np.ndarray:
  """``image`` with :func:`legend` underneath (same width)."""
  if not len(names):
    return np.asarray(image, np.uint8)
  strip = legend(names, colors, image.shape[1])
  return np.concatenate([np.asarray(image, np.uint8), strip], axis=0)


def class_legend(label_maps: Sequence[np.ndarray], class_names: Sequence[str],
                 colors: Optional[np.ndarray] = None) -> tuple[list[str], list]:
  """Names and colours of the classes present in ``label_maps`` (index order).

  Indices without a name are shown as numbers; the ignore label (255) as 'ignore'.
  """
  colors = palette() if colors is None else colors
  present = np.unique(np.concatenate([np.asarray(m).ravel() for m in label_maps]))
  names, swatches = [], []
  for index in present.astype(np.int64):
    if index == IGNORE_LABEL:
      names.append("ignore")
    else:
      names.append(class_names[index] if 0 <= index < len(class_names) else str(index))
    swatches.append(colors[index % len(colors)])
  return names, swatches


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str],
                    colors: Sequence, masks: Optional[np.ndarray] = None,
                    alpha: float = 0.45) -> np.ndarray:
  """Blends ``masks`` (N, H, W) and outlines ``boxes`` (N, 4) xyxy px with a text tag each.

  ``labels`` are the tags ("cat 0.93"); ``colors`` one RGB colour per detection. Call on the
  upscaled image with boxes scaled alike so the text stays legible.
  """
  out = np.asarray(image, np.uint8)
  if masks is not None:
    for mask, color in zip(masks, colors):
      out = blend(out, np.broadcast_to(np.asarray(color, np.uint8), out.shape), alpha, mask)
  canvas = Image.fromarray(out)
  draw = ImageDraw.Draw(canvas)
  face = font()
  height, width = out.shape[:2]
  for box, text, color in zip(np.asarray(boxes, np.float64).reshape(-1, 4), labels, colors):
    color = tuple(int(c) for c in color)
    x0, y0 = np.clip(np.floor(box[:2]), 0, [width - 1, height - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(box[2:]) - 1, 0, [width - 1, height - 1]).astype(int)
    draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=2)
    tag_w, tag_h = _text_width(text, face) + 4, _FONT_SIZE + 4
    ty = y0 - tag_h if y0 - tag_h >= 0 else y0
    draw.rectangle([x0, ty, x0 + tag_w, ty + tag_h], fill=color)
    ink = "black" if sum(color) > 380 else "white"  # legible on light and dark tags
    draw.text((x0 + 2, ty + 1), text, fill=ink, font=face)
  return np.asarray(canvas)


def save_png(path: str, image: np.ndarray, colors: Optional[np.ndarray] = None) -> str:
  """Writes ``image`` to ``path`` atomically (temporary file in the same folder, rename).

  A 2-D uint8 ``image`` with ``colors`` is stored as a palette PNG: the pixel values stay the
  class indices and viewers show the colours (the VOC ``SegmentationClass`` format).
  """
  image = np.asarray(image)
  if colors is not None:
    if image.ndim != 2 or image.min(initial=0) < 0 or image.max(initial=0) > 255:
      raise ValueError(f"a palette PNG needs a 2-D label map in 0..255, got shape "
                       f"{image.shape} and range {image.min(initial=0)}..{image.max(initial=0)}")
    picture = Image.fromarray(image.astype(np.uint8))
    picture.putpalette(np.asarray(colors, np.uint8)[:256].ravel().tolist())  # L -> P
  else:
    picture = Image.fromarray(np.asarray(image, np.uint8))
  temporary = f"{path}.{os.getpid()}.tmp"  # same folder: the rename is atomic
  try:
    picture.save(temporary, format="PNG")
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.unlink(temporary)
    raise
  return path
