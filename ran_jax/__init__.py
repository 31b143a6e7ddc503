"""ran_jax: the Residual Attention Network in JAX/Flax, with its training system."""

__version__ = '0.1.0'
