"""One pinned training step of a tiny preset: catches any silent change of the numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import tiny_model

# Loss before and after one SGD step (lr 0.1) of the tiny attention56_cifar below, and the
# global gradient norm, as computed when this test was written (float32, CPU, jit; the
# tolerance allows for reduction-order differences between XLA versions and CPUs).
PINNED_LOSS_BEFORE = 2.339033
PINNED_LOSS_AFTER = 1.985728
PINNED_GRAD_NORM = 14.575795


def test_one_step_regression():
  model = tiny_model('attention56_cifar')
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  labels = jnp.array([0, 3, 7, 9])
  variables = jax.jit(lambda: model.init(jax.random.key(0), images, train=False))()

  def loss_fn(params, stats):
    logits, updates = model.apply({'params': params, 'batch_stats': stats}, images,
                                  train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

  @jax.jit
  def step(params, stats):
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return loss, grads, params, updates['batch_stats']

  loss, grads, params, stats = step(variables['params'], variables['batch_stats'])
  loss_after, *_ = step(params, stats)
  np.testing.assert_allclose(
      [loss, loss_after, optax.tree.norm(grads)],
      [PINNED_LOSS_BEFORE, PINNED_LOSS_AFTER, PINNED_GRAD_NORM], rtol=1e-3)
  # Both branches of every attention module receive gradient.
  for stage in ('stage1', 'stage2', 'stage3'):
    for branch in ('trunk', 'mask'):
      leaves = jax.tree.leaves(grads[stage]['module1'][branch])
      assert 0 < sum(float(jnp.abs(g).sum()) for g in leaves) < np.inf
