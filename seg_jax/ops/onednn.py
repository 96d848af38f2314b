"""oneDNN 2-D convolutions on CPU, called from XLA through its FFI (optional).

``seg_jax.ops._onednn_conv`` is a small C++ extension (``seg_jax/ops/csrc/onednn_conv.cc``)
compiled by ``pip install`` when oneDNN is installed (``onednn-cpu-gomp`` and
``onednn-devel-cpu-gomp``, pinned in requirements.txt; see setup.py). It holds three XLA FFI
handlers: the forward pass, the input gradient and the kernel gradient of an NHWC/HWIO float32
convolution. :func:`seg_jax.ops.conv.conv2d` uses them on CPU when :func:`available`; without
the extension everything runs on XLA as before. ``info()`` says which, in one line.

Threading: the wheel's oneDNN runs on GNU OpenMP. A call uses one OpenMP team of as many
threads as the process may use cores (``OMP_NUM_THREADS`` overrides), the calling XLA thread
being one of them and waiting for the others; the extension runs one convolution at a time, so
two XLA threads never start two full teams on the same cores. Idle OpenMP threads sleep
instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless set), leaving the cores to XLA
between convolutions.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

# GNU OpenMP's idle threads spin for a while after each parallel region, which would take
# cycles from XLA's own threads between two convolutions; make them sleep at once. Must be set
# before libgomp loads (with the extension); an OMP_WAIT_POLICY set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # optional: absent when oneDNN was not installed at build time (setup.py)
  import seg_jax.ops._onednn_conv as _onednn_conv
  _UNAVAILABLE = None
except ImportError as error:
  _onednn_conv = None
  _UNAVAILABLE = (f"the extension seg_jax.ops._onednn_conv is not usable ({error}); install "
                  "onednn-cpu-gomp and onednn-devel-cpu-gomp, then pip install -e . again")

_TARGETS = {"forward": "seg_jax_onednn_conv_forward",
            "input_gradient": "seg_jax_onednn_conv_input_gradient",
            "kernel_gradient": "seg_jax_onednn_conv_kernel_gradient"}


def available() -> bool:
  """True when the compiled oneDNN extension is loaded."""
  return _onednn_conv is not None


def info() -> str:
  """One line: which oneDNN is used, or why XLA is used instead."""
  if _onednn_conv is None:
    return f"oneDNN convolutions: off, {_UNAVAILABLE}"
  threads = os.environ.get("OMP_NUM_THREADS", f"{len(os.sched_getaffinity(0))} (affinity)")
  return (f"oneDNN convolutions: on, oneDNN {_onednn_conv.onednn_version()}, "
          f"OpenMP threads {threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")


def supports(x: jax.Array, kernel: jax.Array, pads, feature_group_count: int) -> bool:
  """Whether :func:`forward` and the gradients handle this convolution."""
  return (_onednn_conv is not None and feature_group_count == 1
          and x.dtype == jnp.float32 and kernel.dtype == jnp.float32
          and min(x.shape) > 0 and min(kernel.shape) > 0
          and min(min(p) for p in pads) >= 0)


@functools.cache
def _register() -> None:
  for name, target in _TARGETS.items():
    jax.ffi.register_ffi_target(target, getattr(_onednn_conv, name), platform="cpu")


def _call(name, a, b, out_shape, strides, pads, dilation):
  if _onednn_conv is None:
    raise RuntimeError(info())
  _register()
  attributes = dict(stride_h=strides[0], stride_w=strides[1], dilation_h=dilation[0],
                    dilation_w=dilation[1], pad_top=pads[0][0], pad_bottom=pads[0][1],
                    pad_left=pads[1][0], pad_right=pads[1][1])
  call = jax.ffi.ffi_call(_TARGETS[name], jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32),
                          vmap_method="sequential")
  return call(a, b, **{k: np.int64(v) for k, v in attributes.items()})


def forward(x: jax.Array, kernel: jax.Array, out_shape, strides, pads, dilation) -> jax.Array:
  """``y = conv(x, kernel)``; ``out_shape`` is (N, Ho, Wo, Cout); pads ((t, b), (l, r))."""
  return _call("forward", x, kernel, out_shape, strides, pads, dilation)


def input_gradient(dy: jax.Array, kernel: jax.Array, x_shape, strides, pads,
                   dilation) -> jax.Array:
  """``dL/dx`` of the convolution from ``dy = dL/dy``."""
  return _call("input_gradient", dy, kernel, x_shape, strides, pads, dilation)


def kernel_gradient(x: jax.Array, dy: jax.Array, kernel_shape, strides, pads,
                    dilation) -> jax.Array:
  """``dL/dkernel`` (HWIO) of the convolution from ``dy = dL/dy``."""
  return _call("kernel_gradient", x, dy, kernel_shape, strides, pads, dilation)
