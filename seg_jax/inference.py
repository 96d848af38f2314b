"""Inference on images larger than memory allows: the overlap-tile strategy of U-Net.

:func:`predict_tiled` cuts the image into ``tile`` x ``tile`` output tiles. Each tile is
predicted from an input window enlarged by ``margin`` pixels of context on every side;
outside the image the context is extrapolated by mirroring. Windows are cut straight from
the original image through mirrored index arithmetic (no padded copy of the image), batched
with a fixed shape (one compilation), and only each tile's central prediction is written
into a preallocated output. Peak memory is the output plus one batch of windows.

Two kinds of networks are supported, told apart by the shape ``predict_fn`` returns:

* same-padded nets return the window size ``tile + 2 * margin``; the centre is kept. The
  result equals whole-image prediction on the mirror-padded image once ``margin`` covers
  the receptive-field radius (zero padding inside the net then never reaches kept pixels).
* valid nets (valid U-Net) return ``tile`` directly, having consumed the margin
  (``margin = (input - output) / 2``, see :func:`seg_jax.models.unet.unet_valid_margin`).
  With ``tile`` a multiple of ``2**depth`` the pooling grids of all tiles line up and
  the tiled map equals the net applied to the whole mirror-padded image exactly. (The
  paper's 572 -> 388 tiles are 4 mod 16, so at depth >= 3 the pooling phase differs from
  tile to tile: every pixel still sees full context, but values differ slightly from a
  one-shot evaluation.)

Inputs must look like training inputs: float pixels normalised with the config's
``data.mean``/``data.std`` on the 0..1 scale (see :func:`normalize_image`). An integer
image is normalised window by window when ``mean`` and ``std`` are passed (keeping a large
image as compact uint8 in memory) and rejected otherwise: a raw 0..255 image would give
silently wrong maps.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import jax
import numpy as np

from seg_jax.ops.spatial import as_pair, center_crop

_PAD_MODES = ("reflect", "symmetric")


def mirror_indices(indices: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
  """Maps (possibly out-of-range) indices into ``[0, size)`` by mirroring, as ``np.pad``.

  'reflect' mirrors about the edge pixel (..., 2, 1, | 0, 1, 2, ...); 'symmetric' repeats
  it (..., 1, 0, | 0, 1, ...). Mirroring is periodic, so any pad width is allowed.
  """
  if mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {mode!r}")
  indices = np.asarray(indices)
  if size == 1:
    return np.zeros_like(indices)
  if mode == "reflect":
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded < size, folded, period - folded)
  period = 2 * size
  folded = np.mod(indices, period)
  return np.where(folded < size, folded, period - 1 - folded)


def normalize_image(image: np.ndarray, mean: Sequence[float],
                    std: Sequence[float]) -> np.ndarray:
  """uint8 pixels (..., C) -> float32 ``(pixels / 255 - mean) / std``, as the input pipeline.

  Any other dtype is a ValueError naming it (floats are taken as already normalised).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"normalize_image expects uint8 pixels 0..255, got dtype {image.dtype}")
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if mean.shape not in ((), image.shape[-1:]) or std.shape not in ((), image.shape[-1:]):
    raise ValueError(f"mean/std must be scalars or have {image.shape[-1]} channels, got "
                     f"mean shape {mean.shape} and std shape {std.shape}")
  return (image.astype(np.float32) / np.float32(255.0) - mean) / std


def predict_tiled(predict_fn: Callable[[Any], Any], image: np.ndarray, *,
                  tile: Union[int, Sequence[int]], margin: Union[int, Sequence[int]],
                  pad_mode: str = "reflect", batch_size: int = 4,
                  argmax: bool = False, mean: Optional[Sequence[float]] = None,
                  std: Optional[Sequence[float]] = None) -> np.ndarray:
  """Segments ``image`` (H, W, C_in) tile by tile with mirrored context.

  Args:
    predict_fn: maps a batch (B, th + 2*mh, tw + 2*mw, C_in) to logits (B, th + 2*mh,
      tw + 2*mw, K) (same-padded nets) or (B, th, tw, K) (valid nets); a (B, h, w) label
      map is accepted too. Pass a jitted function: every call has the same shape, so it
      compiles once (see :func:`make_predict_fn`).
    image: numpy array (H, W, C_in) of any size: float, normalised as in training, or
      uint8 pixels together with ``mean`` and ``std``. Other integer (and bool) images
      are a ValueError naming the dtype.
    tile: output tile size (int or (th, tw)); the image need not be divisible by it
      (the bottom/right strip is extended by mirroring, then cropped).
    margin: context per side (int or (mh, mw)).
    pad_mode: 'reflect' or 'symmetric' (``np.pad`` semantics).
    batch_size: windows per call; the last batch is padded with copies.
    argmax: return (H, W) int32 labels instead of (H, W, K) float32 logits.
    mean, std: the training normalisation (``config.data.mean``/``std``, 0..1 scale),
      applied to each window of a uint8 image with :func:`normalize_image`; only allowed
      with a uint8 image.

  Returns:
    The prediction. Under the conditions in the module docstring (margin covering the
    receptive field, or a valid net with tile a multiple of its pooling factor) it equals
    the net applied once to ``np.pad(image, ((mh, mh + ey), (mw, mw + ew), (0, 0)),
    pad_mode)``, cropped to (H, W), where ey/ew extend H/W to a multiple of the tile.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"predict_tiled expects one image (H, W, C), got shape {image.shape}")
  if pad_mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}")
  normalize = mean is not None or std is not None
  if normalize and (mean is None or std is None):
    raise ValueError(f"predict_tiled needs both mean and std, got mean={mean}, std={std}")
  if normalize and image.dtype != np.uint8:
    raise ValueError(f"predict_tiled: mean/std normalise uint8 pixels, but the image has "
                     f"dtype {image.dtype} (pass a float image without mean/std)")
  if not normalize and not np.issubdtype(image.dtype, np.floating):
    raise ValueError(f"predict_tiled: image has dtype {image.dtype}; pass mean= and std= (the "
                     f"training normalisation) or a float image normalised as in training")
  th, tw = as_pair(tile, "tile")
  mh, mw = as_pair(margin, "margin")
  if th < 1 or tw < 1 or mh < 0 or mw < 0 or batch_size < 1:
    raise ValueError(f"need tile >= 1, margin >= 0, batch_size >= 1; got {tile}, {margin}, "
                     f"{batch_size}")
  height, width = image.shape[:2]
  win_h, win_w = th + 2 * mh, tw + 2 * mw
  origins = [(y, x) for y in range(0, height, th) for x in range(0, width, tw)]

  def window(y, x):
    rows = mirror_indices(np.arange(y - mh, y - mh + win_h), height, pad_mode)
    cols = mirror_indices(np.arange(x - mw, x - mw + win_w), width, pad_mode)
    pixels = image[rows[:, None], cols[None, :]]
    return normalize_image(pixels, mean, std) if normalize else pixels

  output = None

  def write(result, batch_origins):
    nonlocal output
    result = np.asarray(result)
    if result.ndim not in (3, 4) or result.shape[0] != batch_size:
      raise ValueError(f"predict_fn returned shape {result.shape}; expected (B, h, w[, K]) "
                       f"with B = {batch_size}")
    if result.shape[1:3] == (win_h, win_w):
      result = center_crop(result, (th, tw))  # the window minus the margin on every side
    elif result.shape[1:3] != (th, tw):
      raise ValueError(f"predict_fn returned spatial size {result.shape[1:3]}; expected the "
                       f"window {(win_h, win_w)} or the tile {(th, tw)}")
    if argmax and result.ndim == 4:
      result = np.argmax(result, axis=-1)
    if output is None:
      dtype = np.int32 if result.ndim == 3 else np.float32
      output = np.empty((height, width) + result.shape[3:], dtype)
    for (y, x), pred in zip(batch_origins, result):
      h, w = min(th, height - y), min(tw, width - x)
      output[y:y + h, x:x + w] = pred[:h, :w]

  # Dispatch batch k+1 before reading batch k back, so cutting windows on the host
  # overlaps with the device computing the previous batch.
  pending = None
  for start in range(0, len(origins), batch_size):
    batch_origins = origins[start:start + batch_size]
    windows = np.stack([window(y, x) for y, x in batch_origins])
    if len(batch_origins) < batch_size:
      fill = np.repeat(windows[-1:], batch_size - len(batch_origins), axis=0)
      windows = np.concatenate([windows, fill])
    result = predict_fn(windows)
    if pending is not None:
      write(*pending)
    pending = (result, batch_origins)
  write(*pending)
  return output


def make_predict_fn(model, variables, *, argmax: bool = False) -> Callable[[Any], jax.Array]:
  """Jitted ``windows -> logits`` (or labels) for a Flax model in inference mode.

  Variables are an argument of the jitted function, not a baked-in constant.
  """
  import jax.numpy as jnp

  @jax.jit
  def apply(variables, windows):
    logits = model.apply(variables, jnp.asarray(windows, jnp.float32), train=False)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32) if argmax else logits

  return lambda windows: apply(variables, windows)
