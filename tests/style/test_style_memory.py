"""Style transfer refuses sizes that cannot fit in memory, before allocating anything."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.models.vgg import vgg_tap_names
from seg_jax.style import StyleConfig, build_vgg, gatys, stylize


@pytest.mark.parametrize("depth,layers,hw", [(19, None, (40, 24)), (16, ("relu3_1",), (33, 17))])
def test_activation_count_matches_the_model(depth, layers, hw):
  config = StyleConfig(depth=depth, width=0.25)
  if layers:
    config = dataclasses.replace(config, content_layers=layers, style_layers=layers)
  taps = vgg_tap_names(depth)
  deepest = max(taps.index(t) for t in config.content_layers + config.style_layers)
  shapes = jax.eval_shape(
      lambda x: build_vgg(config).init_with_output(jax.random.key(0), x,
                                                  capture=taps[:deepest + 1])[0],
      jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32))
  expected = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert gatys._activation_floats(config, *hw) == expected


def test_check_memory_names_estimate_and_limit():
  config = StyleConfig(size=3000)
  estimate = gatys.estimate_memory_bytes(config, (512, 512))
  # VGG19 conv/ReLU/pool outputs up to relu5_1 at 3000x3000: ~5.3e9 floats (21 GB) per pass;
  # the measured peak is ~1.6x that plus a few hundred MB.
  floats = gatys._activation_floats(config, 3000, 3000)
  assert 5.0e9 < floats < 5.6e9
  assert 1.6 * 4 * floats < estimate < 3 * 4 * floats
  assert gatys.check_memory(config, (512, 512), limit=estimate) == estimate
  with pytest.raises(MemoryError, match=r"^size 3000 needs about \d+\.\d GiB \(estimate\), more "
                     r"than the 1\.0 GiB of memory available; use a smaller size$"):
    gatys.check_memory(config, (512, 512), limit=1 << 30)
  with pytest.raises(MemoryError, match="size 3000 needs"):
    stylize(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), params={}, config=config,
            memory_limit=1 << 30)


def test_available_memory_reads_the_system():
  available = gatys.available_memory_bytes()
  with open("/proc/meminfo") as f:
    total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
  assert 0 < available <= total
