"""Segment your own images with a trained run:

  python -m experiments.predict --workdir=/tmp/seg_jax/unet_shapes photo.jpg folder/ \
      --output=/tmp/predictions

The model comes from the run's ``config.json`` (or ``--config=NAME`` as in
experiments.evaluate) and its latest checkpoint (``--step`` for another). Outputs are named
after each input's stem: semantic runs write ``<stem>.png`` (class indices, palette PNG) and
``<stem>_overlay.png``; detection/instance runs write ``<stem>_detections.png`` and one
``detections.json`` (COCO results). Images larger than the training size are predicted in
overlapping tiles (``--tile``, ``--margin``). An unreadable file prints one ``error:`` line
and is skipped; the others are still predicted. Exit codes (experiments/cli.py): 0 every input
predicted, 2 some input skipped, the run cannot be loaded or there is nothing to predict
(``--verbose`` for tracebacks).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from experiments import cli, configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config NAME[:ARG] or file path "
                                          "(default: the run's config.json).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with checkpoints/.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default WORKDIR/predictions).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_TILE = flags.DEFINE_integer("tile", None, "Output tile size for large images (default: "
                             "training size - 2 * margin).")
_MARGIN = flags.DEFINE_integer("margin", None, "Mirrored context per tile side (default: "
                               "training size / 8; fixed for valid-padded nets).")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Tiles per forward pass.")
_SCORE = flags.DEFINE_float("score_threshold", 0.5, "Detections drawn at or above this score "
                            "(detections.json keeps them all).")
flags.mark_flag_as_required("workdir")


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  inputs = argv[1:]  # checks that need no model first: the import below takes seconds
  if not inputs:
    cli.fail("no input images: give image files or folders after the flags")
  if _BATCH.value < 1:
    cli.fail(f"--batch_size must be >= 1, got {_BATCH.value}")
  if not os.path.isdir(_WORKDIR.value):
    cli.fail(f"cannot load run {_WORKDIR.value}: no such directory")
  from seg_jax import predict  # pylint: disable=g-import-not-at-top  # jax, TFDS: slow
  files, missing = predict.list_images(inputs)
  for message in missing:
    sys.stderr.write(f"error: {message}\n")
  if not files:
    cli.fail(f"no image files in {' '.join(inputs)}")
  try:
    predictor = predict.load_predictor(_WORKDIR.value, _CONFIG.value, _STEP.value)
  except (ValueError, OSError) as error:
    cli.fail(f"cannot load run {_WORKDIR.value}: {cli.one_line(error)}")
  output = _OUTPUT.value or os.path.join(_WORKDIR.value, "predictions")
  summary = predict.predict_files(
      predictor, files, output, tile=_TILE.value, margin=_MARGIN.value,
      batch_size=_BATCH.value, score_threshold=_SCORE.value, progress=len(files) > 1,
      on_error=lambda message: tqdm.write(f"error: {message}", file=sys.stderr))
  skipped = len(summary.failed) + len(missing)
  print(f"{len(files) - len(summary.failed)} of {len(files) + len(missing)} images predicted "
        f"into {output}" + (f"; {skipped} skipped" if skipped else ""))
  if skipped:
    cli.fail(f"{skipped} of {len(files) + len(missing)} inputs skipped (see above)")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
