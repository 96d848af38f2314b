"""Neural style transfer (Gatys et al.): Gram/content/style/TV losses and an optax loop
over the pixels. See :mod:`seg_jax.style.gatys` and :mod:`seg_jax.style.losses`."""

from seg_jax.style.gatys import (DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, PixelOptimizer,
                                 StepInfo, StyleConfig, available_memory_bytes, build_vgg,
                                 check_memory, estimate_memory_bytes, extract_features,
                                 imagenet_normalize, init_vgg_params, stage_sizes, stylize)
from seg_jax.style.losses import (content_loss, gram_matrix, match_luminance, rgb_to_yiq,
                                  style_layer_loss, style_loss, total_variation_loss,
                                  yiq_to_rgb)

__all__ = [
    "DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "PixelOptimizer", "StepInfo",
    "StyleConfig", "available_memory_bytes", "build_vgg", "check_memory",
    "estimate_memory_bytes", "content_loss", "extract_features", "gram_matrix",
    "imagenet_normalize", "init_vgg_params", "match_luminance", "rgb_to_yiq", "stage_sizes",
    "style_layer_loss", "style_loss", "stylize", "total_variation_loss", "yiq_to_rgb",
]
