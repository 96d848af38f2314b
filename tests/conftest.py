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


def _torchvision_resnet_keys(depth):
  """torchvision ResNet state-dict keys and shapes, written out from its architecture."""
  blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
  bottleneck = depth >= 50
  keys = {"conv1.weight": (64, 3, 7, 7)}

  def bn(prefix, c):
    for name in ("weight", "bias", "running_mean", "running_var"):
      keys[f"{prefix}.{name}"] = (c,)
    keys[f"{prefix}.num_batches_tracked"] = ()

  bn("bn1", 64)
  cin = 64
  for stage, n in enumerate(blocks):
    planes = 64 * 2 ** stage
    for i in range(n):
      p = f"layer{stage + 1}.{i}"
      cout = planes * (4 if bottleneck else 1)
      if bottleneck:
        convs = [(planes, cin, 1), (planes, planes, 3), (cout, planes, 1)]
      else:
        convs = [(planes, cin, 3), (planes, planes, 3)]
      for j, (o, c, k) in enumerate(convs):
        keys[f"{p}.conv{j + 1}.weight"] = (o, c, k, k)
        bn(f"{p}.bn{j + 1}", o)
      if i == 0 and (stage > 0 or cin != cout):
        keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
        bn(f"{p}.downsample.1", cout)
      cin = cout
  keys["fc.weight"], keys["fc.bias"] = (1000, cin), (1000,)
  return keys


@pytest.fixture
def torchvision_resnet_keys():
  """``depth -> {key: shape}`` of a torchvision ResNet-18/50 state dict (ImageNet widths)."""
  return _torchvision_resnet_keys
