"""gptsovits-jax: GPT-SoVITS v2 training in JAX/Flax.

Importing the package itself is cheap: submodules are imported on use, so
``import gptsovits_jax.schedules`` pulls in only jax, optax and the standard library.
"""

__version__ = "0.1.0"
