"""Small timing/memory benchmarks: ``python -m seg_jax.benchmarks.<name>``."""
