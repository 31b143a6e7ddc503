"""A network's class probabilities and soft masks on images, and the grid that shows them.

Used by `ran_jax.predict`, `ran_jax.visualize` and the training loop's TensorBoard images;
imports only `ran_jax.models` and `ran_jax.data`.
"""
