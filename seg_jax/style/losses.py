"""Loss terms of Gatys et al. neural style transfer, plus the colour transforms it uses.

Conventions (all functions are pure ``jnp`` and jittable):

* ``gram_matrix(F)`` is exactly the paper's ``G_ij = sum_k F_ik F_jk`` over the ``M = H*W``
  positions of an ``(N, H, W, C)`` feature map. ``normalize=True`` (alias ``'hwc'``) divides
  by ``H*W*C`` (= ``M_l * N_l``), the form used in practice because it makes Gram entries
  independent of the image size; ``normalize='hw'`` divides by ``H*W`` only.
* ``style_layer_loss`` is the paper's ``E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2``. Since
  ``G / (N_l M_l)`` is the ``'hwc'``-normalised Gram, ``E_l = 1/4 sum (G_hwc - A_hwc)^2``:
  the style targets are therefore stored as ``'hwc'``-normalised Grams.
* ``content_loss`` defaults to the paper's ``1/2 sum (F - P)^2``; ``reduction='mean'`` gives
  ``mean((F - P)^2)``, which does not grow with the image size (used by ``stylize`` so that
  the content/style balance is the same at every scale of a coarse-to-fine schedule).
* ``total_variation_loss`` is the squared-difference (beta = 2) total variation of
  Mahendran & Vedaldi, averaged (default) or summed over neighbouring pixel pairs.
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

# FCC NTSC RGB -> YIQ. Luminance-only transfer (Gatys et al. 2016, "Preserving colour in
# neural artistic style transfer") runs the optimisation on Y and keeps the content's I, Q.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]], dtype=np.float64)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _check_features(features: jax.Array, name: str) -> None:
  if features.ndim != 4:
    raise ValueError(f"{name} must be (N, H, W, C) features, got shape {features.shape}")


def gram_matrix(features: jax.Array, normalize: Union[bool, str] = False) -> jax.Array:
  """Gram matrix ``G_ij = sum_k F_ik F_jk`` of ``(N, H, W, C)`` features -> ``(N, C, C)``.

  Args:
    features: feature maps ``F`` of one layer, positions ``k`` run over ``H*W``.
    normalize: ``False`` (paper, unnormalised), ``True``/``'hwc'`` (divide by ``H*W*C``) or
      ``'hw'`` (divide by ``H*W``).
  """
  _check_features(features, "gram_matrix features")
  n, h, w, c = features.shape
  flat = features.reshape(n, h * w, c)
  gram = jnp.einsum("nki,nkj->nij", flat, flat, precision=jax.lax.Precision.HIGHEST)
  if normalize is False or normalize is None:
    return gram
  if normalize is True or normalize == "hwc":
    return gram / (h * w * c)
  if normalize == "hw":
    return gram / (h * w)
  raise ValueError(f"gram_matrix normalize must be False, True, 'hwc' or 'hw'; got {normalize!r}")


def content_loss(features: jax.Array, target: jax.Array, reduction: str = "sum") -> jax.Array:
  """Content loss between features ``F`` and the content image's features ``P``.

  ``reduction='sum'``: ``1/2 sum (F - P)^2`` (Gatys et al. 2016, eq. 1);
  ``reduction='mean'``: ``mean((F - P)^2)``, independent of the feature-map size.
  """
  if features.shape != target.shape:
    raise ValueError(f"content_loss shapes differ: features {features.shape} vs target "
                     f"{target.shape}")
  sq = jnp.square(features - target)
  if reduction == "sum":
    return 0.5 * jnp.sum(sq)
  if reduction == "mean":
    return jnp.mean(sq)
  raise ValueError(f"content_loss reduction must be 'sum' or 'mean', got {reduction!r}")


def style_layer_loss(features: jax.Array, target_gram: jax.Array) -> jax.Array:
  """``E_l = 1/(4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2`` for one layer (summed over batch).

  Args:
    features: ``(N, H, W, C)`` features of the image being optimised.
    target_gram: the style image's Gram matrix normalised by ``H*W*C``
      (``gram_matrix(style_features, normalize=True)``), shape ``(N or 1, C, C)``. With both
      Grams divided by ``N_l M_l`` the paper's factor reduces to ``1/4``.
  """
  _check_features(features, "style_layer_loss features")
  c = features.shape[-1]
  if target_gram.shape[-2:] != (c, c):
    raise ValueError(f"style_layer_loss: target Gram {target_gram.shape} does not match "
                     f"{c} feature channels")
  gram = gram_matrix(features, normalize=True)
  return 0.25 * jnp.sum(jnp.square(gram - target_gram))


def style_loss(features: Mapping[str, jax.Array], target_grams: Mapping[str, jax.Array],
               layer_weights: Optional[Mapping[str, float]] = None) -> jax.Array:
  """``L_style = sum_l w_l E_l`` over the layers of ``target_grams``.

  ``layer_weights`` defaults to the paper's equal weights ``w_l = 1 / (number of layers)``.
  """
  if not target_grams:
    raise ValueError("style_loss needs at least one style layer")
  missing = [name for name in target_grams if name not in features]
  if missing:
    raise ValueError(f"style_loss: features missing for layers {missing}")
  if layer_weights is None:
    layer_weights = {name: 1.0 / len(target_grams) for name in target_grams}
  total = jnp.zeros((), jnp.float32)
  for name, target in target_grams.items():
    total = total + layer_weights[name] * style_layer_loss(features[name], target)
  return total


def total_variation_loss(image: jax.Array, reduction: str = "mean") -> jax.Array:
  """Squared total variation ``sum (x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2`` of NHWC images.

  ``reduction='mean'`` averages each direction over its pixel pairs and adds the two means;
  ``'sum'`` returns the plain sum.
  """
  _check_features(image, "total_variation_loss image")
  dy = jnp.square(image[:, 1:, :, :] - image[:, :-1, :, :])
  dx = jnp.square(image[:, :, 1:, :] - image[:, :, :-1, :])
  if reduction == "mean":
    return jnp.mean(dy) + jnp.mean(dx)
  if reduction == "sum":
    return jnp.sum(dy) + jnp.sum(dx)
  raise ValueError(f"total_variation_loss reduction must be 'mean' or 'sum', got {reduction!r}")


def rgb_to_yiq(image: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> YIQ (Y in [0, 1]) along the last axis."""
  if image.shape[-1] != 3:
    raise ValueError(f"rgb_to_yiq expects 3 channels last, got shape {image.shape}")
  return jnp.einsum("...c,dc->...d", image, jnp.asarray(_RGB_TO_YIQ, image.dtype))


def yiq_to_rgb(image: jax.Array) -> jax.Array:
  """Inverse of :func:`rgb_to_yiq` (no clipping)."""
  if image.shape[-1] != 3:
    raise ValueError(f"yiq_to_rgb expects 3 channels last, got shape {image.shape}")
  return jnp.einsum("...c,dc->...d", image, jnp.asarray(_YIQ_TO_RGB, image.dtype))


def match_luminance(source_y: jax.Array, reference_y: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Shifts/scales ``source_y`` to the mean and std of ``reference_y`` (Gatys et al. 2016).

  Used on the style image's luminance so that its brightness statistics match the content's
  before luminance-only transfer.
  """
  src_mean, src_std = jnp.mean(source_y), jnp.std(source_y)
  ref_mean, ref_std = jnp.mean(reference_y), jnp.std(reference_y)
  return (source_y - src_mean) * (ref_std / (src_std + eps)) + ref_mean
