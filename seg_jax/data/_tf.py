"""Imports TensorFlow once, configured for an input pipeline that shares the host with JAX.

TensorFlow must not claim GPUs (JAX owns them) nor spawn a thread per core for its own op
pools (the pipeline's parallelism comes from tf.data). Setting these after TF has run an op
raises, so failures are ignored: whoever initialised TF first has decided.
"""

import os

os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (environment must be set first)

_INTER_OP_THREADS = 2
_INTRA_OP_THREADS = 2


def _configure() -> None:
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  try:
    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP_THREADS)
    tf.config.threading.set_intra_op_parallelism_threads(_INTRA_OP_THREADS)
  except RuntimeError:
    pass


_configure()

__all__ = ["tf"]
