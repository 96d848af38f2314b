"""seg_jax: image segmentation and friends in JAX/Flax.

Subpackages: ``ops`` (pure jnp primitives), ``layers``, ``models``, ``losses``,
``metrics``, ``inference``, ``weights``, ``data``, ``training``, ``style``.
"""

__version__ = "0.1.0"
