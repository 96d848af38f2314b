"""Gatys et al. neural style transfer: an optax loop whose only parameter is the image.

``stylize(content, style, params=..., **config)`` minimises
``content_weight * L_content + style_weight * L_style + tv_weight * L_tv`` (see
:mod:`seg_jax.style.losses`) over the pixels, with VGG-16/19 features (ImageNet
normalisation applied inside; images are RGB in [0, 1]).

Design notes:

* The optimisation variable ``z`` is either the image itself (``'clip'``) or its logit
  (``'sigmoid'``, image = sigmoid(z), unconstrained so L-BFGS sees a smooth problem).
  ``'auto'`` picks ``'sigmoid'`` for L-BFGS and ``'clip'`` for Adam. With ``'clip'`` Adam
  projects ``z`` onto [0, 1] after every step; L-BFGS is not projected during the run
  (projection would invalidate its curvature pairs and the value/gradient its line search
  cached) and the image is clipped when read out.
* One jitted step per image shape: the VGG parameters and style/content targets are
  arguments, not baked-in constants, so a stage compiles once (``history['num_traces']``
  counts traces; tests assert one per stage).
* L-BFGS is ``optax.lbfgs`` with its zoom line search, fed by
  ``optax.value_and_grad_from_state`` so the value and gradient computed by the line
  search at the accepted point are reused by the next step. (On XLA:CPU the gradient of a
  convolution inside the line search's ``while_loop`` currently runs several times slower
  than at top level, so one L-BFGS iteration costs about four Adam steps; see
  ``python -m experiments.benchmark_style``.)
* Coarse-to-fine: ``scales=(128, 256)`` with ``size=512`` runs ``steps`` steps at each
  of 128, 256, 512 (longer image side), upsampling the result between stages.
* ``preserve_color``: luminance-only transfer (Gatys et al. 2016): optimise a one-channel
  luminance image against the content's Y and the style's Y (matched to the content's
  mean/std), then recombine with the content's I/Q chroma.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from seg_jax.layers import scale_channels
from seg_jax.models.vgg import STAGE_CHANNELS, STAGE_LAYERS, VGG, vgg_tap_names
from seg_jax.style.losses import (content_loss, gram_matrix, match_luminance, rgb_to_yiq,
                                  style_loss, total_variation_loss, yiq_to_rgb)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_LOGIT_EPS = 1e-2  # sigmoid init clips to [eps, 1 - eps] so no pixel starts saturated


@dataclasses.dataclass(frozen=True)
class StyleConfig:
  """Everything ``stylize`` needs besides the images and VGG parameters.

  Weights: with the defaults (mean content loss, paper ``E_l`` with equal layer weights on
  'hwc'-normalised Grams, torchvision VGG on [0, 1] ImageNet-normalised input)
  ``style_weight / content_weight = 1e3`` gives a style-dominated result when starting from
  the content image; lower it to keep more content. ``tv_weight`` of 1-100 smooths.
  """
  depth: int = 19
  width: float = 1.0
  pooling: str = "max"  # Gatys et al. recommend 'avg' for smoother gradients
  content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
  style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
  style_layer_weights: Optional[tuple[float, ...]] = None  # default 1/len each (paper)
  content_weight: float = 1.0
  style_weight: float = 1e3
  tv_weight: float = 0.0
  content_reduction: str = "mean"  # 'mean' keeps the balance across scales; 'sum' = paper
  optimizer: str = "lbfgs"  # 'lbfgs' | 'adam'
  steps: int = 300  # per scale
  learning_rate: float = 0.02  # Adam only (L-BFGS step sizes come from the line search)
  lbfgs_memory: int = 10
  lbfgs_linesearch_steps: int = 20
  init: str = "content"  # 'content' | 'noise'
  parametrization: str = "auto"  # 'auto' | 'clip' | 'sigmoid'
  size: Optional[int] = 512  # longer side of the result; None keeps the content's size
  scales: tuple[int, ...] = ()  # coarser stages (longer side) run before ``size``
  style_scale: float = 1.0  # style image longer side = stage size * style_scale
  preserve_color: bool = False
  seed: int = 0
  log_every: int = 10  # loss terms are evaluated every ``log_every`` steps

  def validate(self) -> "StyleConfig":
    """Raises a one-line ValueError naming the first bad field."""
    taps = vgg_tap_names(self.depth)
    for field in ("content_layers", "style_layers"):
      layers = getattr(self, field)
      bad = [name for name in layers if name not in taps]
      if not layers or bad:
        raise ValueError(f"{field} must be non-empty VGG{self.depth} taps; bad: {bad}")
    if self.style_layer_weights is not None and (
        len(self.style_layer_weights) != len(self.style_layers)):
      raise ValueError(f"style_layer_weights has {len(self.style_layer_weights)} entries for "
                       f"{len(self.style_layers)} style layers")
    choices = {"optimizer": ("lbfgs", "adam"), "init": ("content", "noise"),
               "parametrization": ("auto", "clip", "sigmoid"), "pooling": ("max", "avg"),
               "content_reduction": ("mean", "sum")}
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
    if self.steps < 1 or self.log_every < 1:
      raise ValueError(f"steps and log_every must be >= 1, got {self.steps}, {self.log_every}")
    sizes = ([] if self.size is None else [self.size]) + list(self.scales)
    if any(int(s) < 16 for s in sizes):
      raise ValueError(f"size and scales must be >= 16 pixels, got {sizes}")
    return self

  @property
  def resolved_parametrization(self) -> str:
    if self.parametrization != "auto":
      return self.parametrization
    return "sigmoid" if self.optimizer == "lbfgs" else "clip"


class StepInfo(NamedTuple):
  """What ``stylize`` passes to ``callback`` after every step."""
  stage: int  # index into ``stage_sizes``
  size: int  # longer side of this stage
  step: int  # steps done in this stage (1-based)
  global_step: int  # steps done in all stages
  total_steps: int
  loss: float  # total loss at the iterate before this step
  terms: Optional[dict]  # loss terms before this step, every ``log_every`` steps, else None
  image: Callable[[], np.ndarray]  # current (H, W, 3) image in [0, 1], computed on demand


def build_vgg(config: StyleConfig) -> nn.Module:
  """The headless VGG used as feature extractor."""
  return VGG(depth=config.depth, width=config.width, include_top=False,
             pooling=config.pooling)


def init_vgg_params(config: StyleConfig, seed: int = 0) -> dict:
  """Random VGG parameters (``--random_weights`` demo and tests).

  Shapes come from ``jax.eval_shape(model.init)`` (no compilation); kernels are drawn with
  numpy from He-normal ``N(0, 2 / fan_in)`` so activations keep their scale through the
  ReLUs, biases are zero. Much cheaper on CPU than running a jitted ``model.init``.
  """
  model = build_vgg(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))["params"]
  rng = np.random.default_rng(seed)

  def draw(leaf: jax.ShapeDtypeStruct) -> jax.Array:
    if len(leaf.shape) == 4:
      std = np.sqrt(2.0 / np.prod(leaf.shape[:3]))
      return jnp.asarray(rng.normal(0.0, std, leaf.shape).astype(np.float32))
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree.map(draw, shapes)


def imagenet_normalize(image: jax.Array) -> jax.Array:
  """[0, 1] RGB (or 1-channel luminance, replicated) -> VGG input."""
  if image.shape[-1] == 1:
    image = jnp.repeat(image, 3, axis=-1)
  mean = jnp.asarray(IMAGENET_MEAN, image.dtype)
  std = jnp.asarray(IMAGENET_STD, image.dtype)
  return (image - mean) / std


def extract_features(model: nn.Module, params: Mapping[str, Any], image: jax.Array,
                     layers: Sequence[str]) -> dict[str, jax.Array]:
  """``{tap: activation}`` of an NHWC [0, 1] image; stops after the deepest tap."""
  return model.apply({"params": params}, imagenet_normalize(image), capture=tuple(layers))


def as_image(image: Any, name: str = "image") -> jax.Array:
  """uint8 or float [0, 1] image, HW / HWC / 1HWC (RGB, RGBA or gray) -> (1, H, W, 3) f32."""
  array = np.asarray(image)
  if array.ndim == 4 and array.shape[0] == 1:
    array = array[0]
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{name} must be an (H, W[, 1|3|4]) image, got shape {np.shape(image)}")
  if array.dtype == np.uint8:
    array = array.astype(np.float32) / 255.0
  array = array[..., :3].astype(np.float32)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return jnp.asarray(array)[None]


def fit_size(height: int, width: int, longer_side: int) -> tuple[int, int]:
  """(h, w) with the longer side ``longer_side`` and the aspect ratio kept."""
  scale = longer_side / max(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def stage_sizes(config: StyleConfig, content_hw: tuple[int, int]) -> list[int]:
  """Longer side of every stage: the coarser ``scales`` then ``size``."""
  final = config.size or max(content_hw)
  return sorted({int(s) for s in config.scales if s < final}) + [int(final)]


def _resize(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
  if tuple(image.shape[1:3]) == tuple(hw):
    return image
  return jax.image.resize(image, (image.shape[0], *hw, image.shape[3]), "linear",
                          antialias=True)


def _render(z: jax.Array, parametrization: str) -> jax.Array:
  return jax.nn.sigmoid(z) if parametrization == "sigmoid" else z


def _unrender(image: jax.Array, parametrization: str) -> jax.Array:
  if parametrization == "sigmoid":
    image = jnp.clip(image, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return jnp.log(image) - jnp.log1p(-image)
  return jnp.clip(image, 0.0, 1.0)


class PixelOptimizer:
  """Jitted loss terms and optimisation step for one model and config.

  ``num_traces`` counts how often the step was traced (once per image shape).
  """

  def __init__(self, model: nn.Module, config: StyleConfig):
    self.model, self.config = model, config
    self.parametrization = config.resolved_parametrization
    self.layers = tuple(dict.fromkeys(config.content_layers + config.style_layers))
    weights = config.style_layer_weights or (1.0 / len(config.style_layers),) * len(
        config.style_layers)
    self.style_weights = dict(zip(config.style_layers, weights))
    if config.optimizer == "lbfgs":
      self.tx = optax.lbfgs(
          memory_size=config.lbfgs_memory,
          linesearch=optax.scale_by_zoom_linesearch(
              max_linesearch_steps=config.lbfgs_linesearch_steps, initial_guess_strategy="one"))
    else:
      self.tx = optax.adam(config.learning_rate)
    self.num_traces = 0
    self.step = jax.jit(self._step)
    self.loss_terms = jax.jit(self._loss_terms)
    self.targets = jax.jit(self._targets)

  def _targets(self, params, content_image, style_image) -> dict:
    cfg = self.config
    content = extract_features(self.model, params, content_image, cfg.content_layers)
    style = extract_features(self.model, params, style_image, cfg.style_layers)
    return {"content": content,
            "style": {k: gram_matrix(v, normalize=True) for k, v in style.items()}}

  def _loss_terms(self, z, targets, params) -> dict:
    cfg = self.config
    image = _render(z, self.parametrization)
    feats = extract_features(self.model, params, image, self.layers)
    content = sum(content_loss(feats[k], targets["content"][k], cfg.content_reduction)
                  for k in cfg.content_layers) / len(cfg.content_layers)
    style = style_loss(feats, targets["style"], self.style_weights)
    tv = total_variation_loss(image)
    total = cfg.content_weight * content + cfg.style_weight * style + cfg.tv_weight * tv
    return {"total": total, "content": content, "style": style, "tv": tv}

  def _step(self, z, opt_state, targets, params):
    """One optimiser step; returns (z, opt_state, loss before the step, #evaluations)."""
    self.num_traces += 1  # Python side effect: runs only while tracing
    value_fn = lambda x: self._loss_terms(x, targets, params)["total"]
    if self.config.optimizer == "lbfgs":
      value, grad = optax.value_and_grad_from_state(value_fn)(z, state=opt_state)
      updates, opt_state = self.tx.update(grad, opt_state, z, value=value, grad=grad,
                                          value_fn=value_fn)
      z = optax.apply_updates(z, updates)
      evals = optax.tree.get(opt_state, "num_linesearch_steps")
    else:
      value, grad = jax.value_and_grad(value_fn)(z)
      updates, opt_state = self.tx.update(grad, opt_state, z)
      z = optax.apply_updates(z, updates)
      if self.parametrization == "clip":
        z = jnp.clip(z, 0.0, 1.0)
      evals = jnp.ones((), jnp.int32)
    return z, opt_state, value, evals

  def init(self, z: jax.Array):
    """Optimiser state with weak types made strong, so step 2 does not retrace."""
    state = self.tx.init(z)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), state)

  def image(self, z: jax.Array) -> jax.Array:
    return jnp.clip(_render(z, self.parametrization), 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _cached_optimizer(config: StyleConfig) -> PixelOptimizer:
  return PixelOptimizer(build_vgg(config), config)


def pixel_optimizer(config: StyleConfig) -> PixelOptimizer:
  """The :class:`PixelOptimizer` for ``config``, shared by calls whose compiled step is the
  same (fields that only drive the Python loop are ignored), so repeated ``stylize`` calls
  do not recompile."""
  key = dataclasses.replace(config, steps=1, size=None, scales=(), style_scale=1.0,
                            init="content", seed=0, log_every=1, preserve_color=False)
  return _cached_optimizer(key)


# Peak memory = _MEMORY_BASE + _MEMORY_FACTOR x the float32 bytes of one VGG pass's
# conv/ReLU/pool outputs at the final stage (activations kept for the backward pass, their
# gradients, XLA temporaries, targets). Measured with ru_maxrss on CPU (VGG19 to relu5_1,
# random weights, 2 steps, sizes 256 and 448): peak = 0.64 GB + 1.6 x activations with Adam,
# 0.67 GB + 1.9 x with L-BFGS (its line search holds a second pass); 2.0 and 0.75 GB keep a
# small margin (e.g. size 448 L-BFGS: 1.58 GB measured, 1.75 GB estimated).
_MEMORY_FACTOR = 2.0
_MEMORY_BASE = 768 << 20  # JAX runtime and compiled code, VGG19 trunk weights (80 MB)


def _activation_floats(config: StyleConfig, height: int, width: int) -> int:
  """Floats in the conv/ReLU/pool outputs of one VGG pass up to the deepest tap."""
  taps = vgg_tap_names(config.depth)
  deepest = max(taps.index(name) for name in config.content_layers + config.style_layers)
  total, h, w, index = 0, height, width, 0
  for stage, layers in enumerate(STAGE_LAYERS[config.depth]):
    channels = scale_channels(STAGE_CHANNELS[stage], config.width)
    for _ in range(2 * layers):  # conv, relu
      if index > deepest:
        return total
      total += h * w * channels
      index += 1
    if index > deepest:
      return total
    h, w = h // 2, w // 2  # 2x2/2 pooling, floor (torchvision)
    total += h * w * channels
    index += 1
  return total


def estimate_memory_bytes(config: StyleConfig, content_hw: tuple[int, int]) -> int:
  """Rough peak host/device memory of :func:`stylize` (its largest, final stage)."""
  height, width = fit_size(*content_hw, stage_sizes(config, content_hw)[-1])
  activations = _activation_floats(config, height, width) * 4
  pixels = height * width * 3 * 4
  history = 2 * config.lbfgs_memory * pixels if config.optimizer == "lbfgs" else 2 * pixels
  return int(_MEMORY_FACTOR * activations + history + _MEMORY_BASE)


def available_memory_bytes() -> Optional[int]:
  """Memory available to this process: psutil if installed, else /proc/meminfo (Linux)."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top  # optional dependency
    return int(psutil.virtual_memory().available)
  except ImportError:
    pass
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def check_memory(config: StyleConfig, content_hw: tuple[int, int],
                 limit: Optional[int] = None) -> int:
  """Raises a one-line MemoryError when the estimate exceeds ``limit`` (default: the
  available memory); returns the estimate in bytes."""
  estimate = estimate_memory_bytes(config, content_hw)
  limit = available_memory_bytes() if limit is None else limit
  if limit is not None and estimate > limit:
    size = stage_sizes(config, content_hw)[-1]
    raise MemoryError(f"size {size} needs about {estimate / 2**30:.1f} GiB (estimate), more than "
                      f"the {limit / 2**30:.1f} GiB of memory available; use a smaller size")
  return estimate


def _new_history() -> dict:
  keys = ("stage", "size", "step", "total", "content", "style", "tv")
  return {**{k: [] for k in keys}, "loss": [], "evaluations": 0, "num_traces": 0,
          "seconds": 0.0, "stage_sizes": []}


def stylize(content: Any, style: Any, *, params: Mapping[str, Any],
            config: Optional[StyleConfig] = None,
            callback: Optional[Callable[[StepInfo], None]] = None,
            memory_limit: Optional[int] = None,
            **overrides) -> tuple[np.ndarray, dict]:
  """Renders ``content`` in the style of ``style``.

  Args:
    content, style: RGB images, uint8 or float in [0, 1] (HWC, HW or 1HWC).
    params: VGG parameters (``load_vgg_params(path, depth=..., include_top=False)`` or
      :func:`init_vgg_params`); ``{'params': ...}`` is accepted too.
    config: a :class:`StyleConfig`; ``overrides`` replace its fields.
    callback: called with a :class:`StepInfo` after every step (progress bars, snapshots).
    memory_limit: bytes; a run whose estimated peak memory (:func:`estimate_memory_bytes`)
      exceeds it raises MemoryError before allocating anything (default: available memory;
      0 disables the check).

  Returns:
    ``(image, history)``: the (H, W, 3) float32 result in [0, 1] and a dict with, every
    ``log_every`` steps and at the end of each stage, lists ``stage, size, step, total,
    content, style, tv``; ``loss`` (total loss before each step), ``evaluations`` (loss and
    gradient evaluations, incl. line search), ``num_traces`` (step traces during this call:
    one per new image shape), ``seconds``, ``stage_sizes``.
  """
  config = dataclasses.replace(config or StyleConfig(), **overrides).validate()
  if params is None:
    raise ValueError("stylize needs VGG params (load_vgg_params(...) or init_vgg_params(...))")
  params = params["params"] if "params" in params else params
  content_full, style_full = as_image(content, "content"), as_image(style, "style")
  content_hw = tuple(content_full.shape[1:3])
  if memory_limit != 0:
    check_memory(config, content_hw, memory_limit)
  sizes = stage_sizes(config, content_hw)
  opt = pixel_optimizer(config)
  traces_before = opt.num_traces
  history = _new_history()
  history["stage_sizes"] = sizes
  total_steps, global_step, start = len(sizes) * config.steps, 0, time.perf_counter()
  image = None
  for stage, size in enumerate(sizes):
    hw = fit_size(*content_hw, size)
    content_img = _resize(content_full, hw)
    style_img = _resize(style_full, fit_size(*style_full.shape[1:3],
                                             max(16, round(size * config.style_scale))))
    if config.preserve_color:
      content_y = rgb_to_yiq(content_img)[..., :1]
      style_y = match_luminance(rgb_to_yiq(style_img)[..., :1], content_y)
      content_img, style_img = content_y, jnp.clip(style_y, 0.0, 1.0)
    targets = opt.targets(params, content_img, style_img)
    if image is not None:  # later stage: upsample the previous result
      init_image = _resize(image, hw)
    elif config.init == "content":
      init_image = content_img
    else:
      init_image = jax.random.uniform(jax.random.key(config.seed), content_img.shape)
    z = _unrender(init_image, opt.parametrization)
    opt_state = opt.init(z)

    def record(step: int, z: jax.Array) -> dict:
      terms = {k: float(v) for k, v in opt.loss_terms(z, targets, params).items()}
      for key, value in (("stage", stage), ("size", size), ("step", step), *terms.items()):
        history[key].append(value)
      return terms

    for step in range(config.steps):
      terms = record(step, z) if step % config.log_every == 0 else None
      z, opt_state, value, evals = opt.step(z, opt_state, targets, params)
      history["loss"].append(float(value))
      # L-BFGS: line-search evaluations, plus the first step's own value_and_grad.
      history["evaluations"] += int(evals) + int(step == 0 and config.optimizer == "lbfgs")
      global_step += 1
      if callback is not None:
        current = z
        callback(StepInfo(stage, size, step + 1, global_step, total_steps, float(value), terms,
                          lambda current=current: _finish(opt.image(current), config,
                                                          content_full)))
    record(config.steps, z)
    image = opt.image(z)
  history["num_traces"] = opt.num_traces - traces_before
  history["seconds"] = time.perf_counter() - start
  return _finish(image, config, content_full), history


def _finish(image: jax.Array, config: StyleConfig, content_full: jax.Array) -> np.ndarray:
  """Optimised image -> (H, W, 3) RGB in [0, 1]; recombines chroma for preserve_color."""
  if config.preserve_color:
    content = _resize(content_full, tuple(image.shape[1:3]))
    yiq = rgb_to_yiq(content)
    image = jnp.clip(yiq_to_rgb(jnp.concatenate([image[..., :1], yiq[..., 1:]], -1)), 0.0, 1.0)
  return np.asarray(image[0], np.float32)
