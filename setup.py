"""Builds the optional oneDNN convolution extension ``seg_jax.ops._onednn_conv``.

Everything else about the package is in pyproject.toml. The extension is compiled only when
oneDNN's headers and library (the ``onednn-devel-cpu-gomp`` / ``onednn-cpu-gomp`` wheels, or
``SEG_JAX_ONEDNN_ROOT=<prefix with include/ and lib/>``) and jaxlib's FFI headers are found
and the compiler succeeds; otherwise it is skipped with one warning and the install still
succeeds (``seg_jax.ops.onednn.available()`` then says why, and conv2d uses XLA).
``SEG_JAX_BUILD_ONEDNN=0`` skips it on purpose.
"""

import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "seg_jax/ops/csrc/onednn_conv.cc"


def _prefixes():
  """Where pip puts wheel data files (include/, lib/): the target environment's prefix.
  Under pip's build isolation ``sys.prefix`` is still the environment being installed into."""
  roots = [os.environ.get("SEG_JAX_ONEDNN_ROOT"), sys.prefix, sys.base_prefix,
           sysconfig.get_config_var("prefix")]
  return [r for i, r in enumerate(roots) if r and r not in roots[:i]]


def find_onednn():
  """(include_dir, lib_dir) of oneDNN, or None."""
  for root in _prefixes():
    include, lib = os.path.join(root, "include"), os.path.join(root, "lib")
    if (os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp"))
        and os.path.exists(os.path.join(lib, "libdnnl.so"))):
      return include, lib
  return None


def find_ffi_headers():
  """jaxlib's include dir (``xla/ffi/api/ffi.h``), found on disk: jaxlib is not importable
  inside pip's isolated build environment, but it is installed in the target one."""
  schemes = [sysconfig.get_paths(),  # the environment; then a --system-site-packages base
             sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})]
  dirs = {paths[k] for paths in schemes for k in ("purelib", "platlib")} | set(sys.path)
  for d in sorted(d for d in dirs if d):
    include = os.path.join(d, "jaxlib", "include")
    if os.path.exists(os.path.join(include, "xla", "ffi", "api", "ffi.h")):
      return include
  return None


class OptionalBuildExt(build_ext):
  """Builds the extension when its dependencies are there; never fails the install."""

  def build_extension(self, ext):
    reason = None
    onednn, ffi = find_onednn(), find_ffi_headers()
    if os.environ.get("SEG_JAX_BUILD_ONEDNN", "1") == "0":
      reason = "SEG_JAX_BUILD_ONEDNN=0"
    elif onednn is None:
      reason = ("oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp, or set "
                f"SEG_JAX_ONEDNN_ROOT); looked in {_prefixes()}")
    elif ffi is None:
      reason = "jaxlib's FFI headers (jaxlib/include/xla/ffi/api/ffi.h) not found"
    if reason:
      print(f"warning: skipping {ext.name}: {reason}; conv2d will use XLA", file=sys.stderr)
      return
    include, lib = onednn
    ext.include_dirs += [include, ffi]
    ext.library_dirs.append(lib)
    # RPATH rather than RUNPATH: libdnnl.so carries no search path of its own, and only
    # DT_RPATH of the extension is also searched for libdnnl's own dependencies.
    ext.extra_link_args += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{lib}"]
    try:
      super().build_extension(ext)
    except Exception as error:  # any compiler or linker failure: fall back to XLA
      print(f"warning: skipping {ext.name}: build failed ({error}); conv2d will use XLA",
            file=sys.stderr)


setup(
    ext_modules=[Extension("seg_jax.ops._onednn_conv", [SOURCE], language="c++",
                           libraries=["dnnl"], optional=True,
                           extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
