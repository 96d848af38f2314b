"""Test-wide environment: CPU only, no cloud metadata probes, quiet TensorFlow."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

import jax  # noqa: E402

# jax's default partitionable threefry costs ~2 s of compile per jax.random call on this CPU;
# the classic implementation gives equally good random numbers for tests and compiles in 0.4 s.
jax.config.update("jax_threefry_partitionable", False)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def fast_compile():
  """Most XLA optimisations off for a module: tiny-model tests are compile-bound, and the
  optimisation passes cost more than they save (restored afterwards). Use with
  ``pytestmark = pytest.mark.usefixtures("fast_compile")``."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
