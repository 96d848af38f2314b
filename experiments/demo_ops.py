"""Prints the lecture's upsampling primitives on tiny inputs: ``python -m experiments.demo_ops``.

1. A 1-D convolution as a matrix ``M`` (kernel (x, y, z), stride 1, padding 1, length 4).
2. The transposed convolution as ``M^T`` (and that :func:`conv_transpose` computes it).
3. Nearest-neighbour and bed-of-nails unpooling of ``[[1, 2], [3, 4]]``.
4. Max pooling that remembers where the maxima were, and max unpooling back there.
"""

from __future__ import annotations

from typing import Optional, Sequence

from absl import app
import jax.numpy as jnp
import numpy as np

from experiments import cli
from seg_jax import ops


def _show(title: str, array) -> None:
  print(f"\n{title}")
  text = np.array2string(np.asarray(array), separator=" ",
                         formatter={"object": lambda v: f"{v!s:>2}"})
  print("\n".join("  " + line for line in text.splitlines()))


def _plane(x) -> np.ndarray:
  """(1, H, W, 1) -> (H, W) for printing."""
  return np.asarray(x)[0, :, :, 0]


def conv_as_matrix() -> None:
  print("=" * 72 + "\n1-D convolution as a matrix: kernel (x, y, z), stride 1, padding 1, "
        "input length 4")
  symbolic = ops.conv_matrix(np.array(["x", "y", "z"], dtype=object), (4,), stride=1, padding=1)
  _show("M (symbolic):", symbolic)
  _show("M^T (transposed convolution):", symbolic.T)

  kernel = np.array([1.0, 2.0, 3.0])  # x=1, y=2, z=3
  m = ops.conv_matrix(kernel, (4,), stride=1, padding=1)
  _show("M with x=1, y=2, z=3:", m.astype(int))
  signal = np.array([1.0, 0.0, 2.0, -1.0])
  as_image = lambda v: jnp.asarray(v).reshape(1, 1, -1, 1)  # 1-D signal as a 1-row image
  as_kernel = jnp.asarray(kernel).reshape(1, 3, 1, 1)
  conv_out = ops.conv2d(as_image(signal), as_kernel, padding=(0, 1))
  print(f"\nconv(a) for a = {signal}: {np.asarray(conv_out).ravel()}  ==  M @ a = {m @ signal}")

  y = np.array([1.0, -1.0, 0.5, 2.0])
  transposed = ops.conv_transpose(as_image(y), as_kernel, stride=1, padding=(0, 1))
  print(f"conv_transpose(b) for b = {y}: {np.asarray(transposed).ravel()}  ==  M^T @ b = {m.T @ y}")

  strided = ops.conv_matrix(np.array(["x", "y", "z"], dtype=object), (5,), stride=2, padding=1)
  _show("Stride 2, padding 1, input length 5: M (3x5) downsamples ...", strided)
  _show("... and M^T (5x3) upsamples: each input value scatters x, y, z into the output",
        strided.T)
  b = np.array([1.0, 2.0, 3.0])
  up = ops.conv_transpose(as_image(b), as_kernel, stride=2, padding=(0, 1))
  m2 = ops.conv_matrix(kernel, (5,), stride=2, padding=1)
  print(f"\nconv_transpose(b, stride 2) for b = {b}: {np.asarray(up).ravel()}  ==  "
        f"M^T @ b = {m2.T @ b}")


def unpooling() -> None:
  print("\n" + "=" * 72 + "\nUnpooling [[1, 2], [3, 4]] by 2")
  x = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
  _show("nearest neighbour:", _plane(ops.unpool_nearest(x)).astype(int))
  _show("bed of nails:", _plane(ops.unpool_bed_of_nails(x)).astype(int))


def max_unpooling() -> None:
  print("\n" + "=" * 72 + "\nMax pooling 2x2 with indices, then max unpooling")
  x = np.array([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], np.float32)
  _show("input:", x.astype(int))
  pooled, indices = ops.max_pool_with_argmax(jnp.asarray(x).reshape(1, 4, 4, 1))
  _show("max pooled:", _plane(pooled).astype(int))
  _show("indices (flat position h * W + w of each maximum):", _plane(indices))
  decoded = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
  _show("max unpooling of [[1, 2], [3, 4]] with those indices (values go back where the "
        "maxima were):", _plane(ops.max_unpool(decoded, indices, (4, 4))).astype(int))


def main(argv: Optional[Sequence[str]] = None) -> None:
  if argv is not None and len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (demo_ops takes no arguments)")
  conv_as_matrix()
  unpooling()
  max_unpooling()


if __name__ == "__main__":
  app.run(cli.guarded(main))
