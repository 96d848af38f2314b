"""Put ImageNet weights where the configs look for them:

  python -m experiments.fetch_weights --model=vgg16|vgg16_caffe|vgg19|resnet50 [--dest=DIR]

Downloads into ``~/.cache/seg_jax/`` (or ``--dest``); see ``seg_jax.pretrained`` for the
table of sources and file names. Hugging Face files need ``pip install -e '.[weights]'``;
the Caffe VGG-16 needs torch once to convert its .pth. Without network, one ``error:`` line
says which file to download from where and where to save it (exit code 2).
"""

from absl import app, flags

from experiments import cli, configs
from seg_jax import pretrained

_MODEL = flags.DEFINE_enum("model", None, sorted(pretrained.WEIGHTS), "Weights to fetch.")
_DEST = flags.DEFINE_string("dest", None, "Folder (default ~/.cache/seg_jax).")
flags.mark_flag_as_required("model")


def main(argv):
  configs.start_cli(argv)
  try:
    path = pretrained.fetch(_MODEL.value, _DEST.value)
  except pretrained.WeightsUnavailable as error:
    cli.fail(str(error))
  print(f"{_MODEL.value}: {path} ({pretrained.WEIGHTS[_MODEL.value].description})")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=configs.parse_flags_or_exit)
