r"""Gatys neural style transfer from the command line.

  python -m experiments.style_transfer --content=A.jpg --style=B.jpg --output=out.png \
      --weights=vgg19.safetensors --size=512 --steps=300 --optimizer=lbfgs

Writes ``out.png``, ``out_side_by_side.png`` (content | style | result) and, with
``--snapshot_every=N``, ``out_step00010.png`` ... (each written to a temporary file and
renamed, so a viewer never sees a half-written PNG).

Defaults: content = scikit-image's ``astronaut()``; style = a procedural texture (coloured
interfering sine waves plus swirls, see :func:`procedural_texture`). ``--random_weights``
runs a demo with an untrained VGG anywhere (then ``--size`` and ``--steps`` default to 128
and 50 to keep it short on a CPU); otherwise ``--weights`` must name an ImageNet VGG file.

Errors (a missing or non-image file, a damaged or refused weights file, a size whose
estimated memory exceeds what is available) are one line ``error: ...`` with exit code 2;
``--verbose`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from absl import flags
import numpy as np

from experiments import cli

# A private FlagValues: no clash with other entry points' flags imported in the same process
# (tests), and `main(argv)` can be called repeatedly in-process.
FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
flags.DEFINE_string("content", None, "Content image (default: skimage astronaut).", **_IN)
flags.DEFINE_string("style", None, "Style image (default: a procedural texture).", **_IN)
flags.DEFINE_string("output", "stylized.png", "Output PNG path.", **_IN)
flags.DEFINE_string("weights", None, "VGG weights: torchvision vgg19-dcbb9e9d.pth or timm "
                    "vgg19.tv_in1k model.safetensors (.safetensors/.npz/.pth).", **_IN)
flags.DEFINE_bool("random_weights", False, "Untrained VGG (demo without weights).", **_IN)
flags.DEFINE_integer("depth", 19, "VGG depth (16 or 19).", **_IN)
flags.DEFINE_float("width", 1.0, "VGG channel multiplier (random weights only).", **_IN)
flags.DEFINE_integer("size", None, "Longer side of the result (default 512; 128 with "
                     "--random_weights).", **_IN)
flags.DEFINE_integer("steps", None, "Steps per scale (default 300; 50 with "
                     "--random_weights).", **_IN)
flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser over the pixels.", **_IN)
flags.DEFINE_float("learning_rate", 0.02, "Adam learning rate.", **_IN)
flags.DEFINE_float("content_weight", 1.0, "Content loss weight (alpha).", **_IN)
flags.DEFINE_float("style_weight", 1e3, "Style loss weight (beta).", **_IN)
flags.DEFINE_float("tv_weight", 0.0, "Total variation weight.", **_IN)
flags.DEFINE_enum("init", "content", ["content", "noise"], "Initial image.", **_IN)
flags.DEFINE_enum("pooling", "max", ["max", "avg"], "VGG pooling (Gatys et al.: avg).", **_IN)
flags.DEFINE_enum("parametrization", "auto", ["auto", "clip", "sigmoid"],
                  "Pixel parametrisation (auto: sigmoid for lbfgs, clip for adam).", **_IN)
flags.DEFINE_bool("preserve_color", False, "Luminance-only transfer (content colours).", **_IN)
flags.DEFINE_list("scales", [], "Coarser stage sizes run first, e.g. 128,256.", **_IN)
flags.DEFINE_list("content_layers", ["relu4_2"], "Content taps.", **_IN)
flags.DEFINE_list("style_layers", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                  "Style taps.", **_IN)
flags.DEFINE_integer("snapshot_every", 0, "Write a snapshot PNG every N steps (0: off).", **_IN)
flags.DEFINE_integer("seed", 0, "Seed for noise init and random weights.", **_IN)
flags.DEFINE_bool("verbose", False, "Show the traceback of errors.", **_IN)


def missing_weights_message(depth: int, path: Optional[str]) -> str:
  where = f"weights file {path!r} not found" if path else f"no VGG{depth} weights given"
  return (f"{where}; pass --weights=PATH to torchvision's vgg{depth} ImageNet "
          f"checkpoint (.pth, or converted to .safetensors/.npz) or timm's vgg{depth}.tv_in1k "
          f"model.safetensors (huggingface.co/timm/vgg{depth}.tv_in1k), "
          "or use --random_weights for a demo")


def procedural_texture(size: int = 256) -> np.ndarray:
  """A colourful, brush-like texture: interfering sine waves warped by swirls, (H, W, 3)."""
  y, x = np.mgrid[:size, :size].astype(np.float32) / size
  angle = 6.0 * np.sin(3.0 * np.pi * x) * np.cos(2.0 * np.pi * y)
  u, v = x + 0.05 * np.cos(angle), y + 0.05 * np.sin(angle)
  red = 0.5 + 0.5 * np.sin(2 * np.pi * (9 * u + 3 * v))
  green = 0.5 + 0.5 * np.sin(2 * np.pi * (4 * u - 8 * v) + 1.0)
  blue = 0.5 + 0.5 * np.cos(2 * np.pi * 13 * np.hypot(u - 0.5, v - 0.5))
  return np.stack([red, 0.6 * green + 0.2 * red, blue], -1).clip(0, 1)


def _skimage_astronaut() -> np.ndarray:
  try:
    from skimage import data  # pylint: disable=g-import-not-at-top
  except ImportError:
    cli.fail("the default content image needs scikit-image (pip install scikit-image), or "
             "pass --content=IMAGE")
  return data.astronaut()


def load_image(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    cli.fail(f"image {path!r} not found")
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError) as error:  # not/bad image
    cli.fail(f"cannot read image {path!r}: {cli.one_line(error)}")


def _to_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png_atomic(image: np.ndarray, path: str) -> None:
  """Writes ``path`` via a temporary file in the same folder and ``os.replace``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  Image.fromarray(_to_uint8(image)).save(tmp, format="PNG")
  os.replace(tmp, path)


def side_by_side(images: Sequence[np.ndarray], height: int, gap: int = 4) -> np.ndarray:
  """Resizes every image to ``height`` (aspect kept) and joins them left to right."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  panels = []
  for image in images:
    pil = Image.fromarray(_to_uint8(image))
    width = max(1, round(pil.width * height / pil.height))
    panels.append(np.asarray(pil.resize((width, height), Image.BILINEAR)))
    panels.append(np.full((height, gap, 3), 255, np.uint8))
  return np.concatenate(panels[:-1], axis=1)


def _stem(path: str) -> str:
  return os.path.splitext(path)[0]


def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  """Resets every flag to its default, then parses ``argv`` (argv[0] is the program)."""
  FLAGS.unparse_flags()
  try:
    rest = FLAGS(list(argv))
  except flags.Error as error:
    cli.fail(str(error))
  if len(rest) > 1:
    cli.fail(f"unexpected arguments: {' '.join(rest[1:])}")
  return FLAGS


def _check_output(path: str) -> None:
  """Fails before the run (not after it) when the result cannot be written."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    cli.fail(f"--output {path!r} is a directory")
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    cli.fail(f"cannot create the folder of --output {path!r} ({error.strerror})")
  if not os.access(folder, os.W_OK):
    cli.fail(f"cannot write --output {path!r}: folder {folder} is not writable")


def _load_weights(path: str, depth: int):
  from seg_jax.models.vgg_weights import load_vgg_params  # pylint: disable=g-import-not-at-top
  try:
    return load_vgg_params(path, depth=depth, include_top=False)
  except Exception as error:  # pylint: disable=broad-except  # bad files -> one line
    if not cli.is_expected(error):
      raise
    cli.fail(f"cannot read weights {path!r}: {cli.one_line(error)}")


def main(argv: Sequence[str]) -> None:
  """Parses ``argv`` and runs the style transfer; expected failures print one line
  ``error: ...`` and exit with code 2 (see experiments/cli.py)."""
  cli.guarded(_main, FLAGS)(argv)


def _main(argv: Sequence[str]) -> None:
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
    print(__doc__ + "\nFlags:\n" + FLAGS.get_help())
    return
  parse_flags(argv)
  # Imported here so `--help` and the weights error are instant.
  from seg_jax import style as style_lib  # pylint: disable=g-import-not-at-top

  if not FLAGS.random_weights and not (FLAGS.weights and os.path.isfile(FLAGS.weights)):
    cli.fail(missing_weights_message(FLAGS.depth, FLAGS.weights))
  _check_output(FLAGS.output)
  demo = FLAGS.random_weights
  config = style_lib.StyleConfig(
      depth=FLAGS.depth, width=FLAGS.width if demo else 1.0, pooling=FLAGS.pooling,
      content_layers=tuple(FLAGS.content_layers), style_layers=tuple(FLAGS.style_layers),
      content_weight=FLAGS.content_weight, style_weight=FLAGS.style_weight,
      tv_weight=FLAGS.tv_weight, optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
      steps=FLAGS.steps or (50 if demo else 300), init=FLAGS.init,
      parametrization=FLAGS.parametrization, size=FLAGS.size or (128 if demo else 512),
      scales=tuple(int(s) for s in FLAGS.scales), preserve_color=FLAGS.preserve_color,
      seed=FLAGS.seed)
  config.validate()
  content = load_image(FLAGS.content) if FLAGS.content else _skimage_astronaut()
  style = load_image(FLAGS.style) if FLAGS.style else procedural_texture(256)
  style_lib.check_memory(config, content.shape[:2])  # before loading 500 MB of weights
  if demo:
    print(f"random VGG{config.depth} weights (width {config.width}): a demo, not real style "
          f"transfer; size {config.size}, {config.steps} steps per scale", file=sys.stderr)
    params = style_lib.init_vgg_params(config, seed=FLAGS.seed)
  else:
    params = _load_weights(FLAGS.weights, config.depth)
  total = len(style_lib.stage_sizes(config, content.shape[:2])) * config.steps
  stem = _stem(FLAGS.output)

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with tqdm(total=total, desc="stylize", unit="step", dynamic_ncols=True) as bar:
    def callback(info) -> None:
      bar.update(1)
      if info.terms is not None:
        bar.set_postfix(size=info.size, total=f"{info.terms['total']:.3g}",
                        content=f"{info.terms['content']:.3g}",
                        style=f"{info.terms['style']:.3g}", tv=f"{info.terms['tv']:.3g}")
      if FLAGS.snapshot_every and info.global_step % FLAGS.snapshot_every == 0:
        save_png_atomic(info.image(), f"{stem}_step{info.global_step:05d}.png")

    result, history = style_lib.stylize(content, style, params=params, config=config,
                                        callback=callback)

  save_png_atomic(result, FLAGS.output)
  comparison = f"{stem}_side_by_side.png"
  save_png_atomic(side_by_side([content, style, result], result.shape[0]), comparison)
  print(f"loss {history['total'][0]:.4g} -> {history['total'][-1]:.4g} in "
        f"{history['seconds']:.1f}s; wrote {FLAGS.output} and {comparison}", file=sys.stderr)


if __name__ == "__main__":
  main(sys.argv)
