"""Rematerialisation: the same parameters and gradients, fewer activations kept for the
backward pass (counted from JAX's saved residuals: XLA:CPU drops remat's optimisation
barriers, so CPU buffer sizes do not show it; GPUs and TPUs keep them)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import quick_jit, random_variables, tiny_model

from ran_jax.models import activation_bytes_per_image


def loss_and_grad(model, variables, images, labels):
  def loss_fn(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            images, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  # Compiled quickly (no LLVM optimisation): the values are the same, the test is about them.
  return quick_jit(jax.value_and_grad(loss_fn))(variables['params'])


SMALL = dict(stage_widths=(16,), modules_per_stage=(1,), mask_poolings=(2,))


def small_model(**overrides):
  return tiny_model('attention56_cifar', **SMALL, **overrides)


@pytest.fixture(scope='module')
def reference():
  model = small_model()
  images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  labels = jnp.arange(8) % 10
  variables = random_variables(jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, train=False)))
  return variables, images, labels, loss_and_grad(model, variables, images, labels)


@pytest.mark.parametrize('remat,policy', [('unit', 'conv_outputs'), ('module', 'nothing')])
def test_remat_keeps_parameters_and_gradients(reference, remat, policy):
  variables, images, labels, (loss, grads) = reference
  model = small_model(remat=remat, remat_policy=policy)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  assert jax.tree.structure(shapes) == jax.tree.structure(variables)  # same parameter paths
  remat_loss, remat_grads = loss_and_grad(model, variables, images, labels)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               remat_grads, grads)


def test_remat_keeps_fewer_activations():
  kept = {(remat, policy): activation_bytes_per_image(
      small_model(remat=remat, remat_policy=policy), 16)
      for remat, policy in [('none', 'nothing'), ('unit', 'nothing'), ('unit', 'conv_outputs'),
                            ('module', 'nothing')]}
  without = kept['none', 'nothing']
  assert kept['unit', 'nothing'] < kept['unit', 'conv_outputs'] < 0.7 * without
  assert kept['module', 'nothing'] < 0.5 * without
